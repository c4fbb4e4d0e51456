"""Speech or music? The rule `rotcodec compress` uses to pick a model when no `--model` is given.

A logistic regression over twelve clip-level features of the first `SECONDS` of a file, mixed to mono at
16 kHz: how speech-like its loudness contour is (the share of quiet frames, the strength of the 2-8 Hz
syllable-rate modulation), how fast its spectrum changes (spectral flux, the similarity of log spectra 20 and
200 ms apart), how tonal it is (spectral flatness), where its energy lies (centroid and its spread) and how
much of it lies above 4 kHz), and how its pitch behaves (how much of it is periodic, how steadily it holds a
pitch, how long it holds one). Its weights live in `rotcodec/pretrained/content.json`, fitted by
`rotcodec detect --fit` on the training splits of a speech and a music manifest; the JSON records the data and
the accuracy on the held-out splits. Between `speech_below` and `music_above` it does not guess: the caller
asks for `--model`. The band is lopsided because the costly mistake is music coded by the speech model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from ..dsp.pitch import HOP_SECONDS, active_frames, normalised_autocorrelation, peak_lag

RATE = 16000
SECONDS = 20.0
HOP = 320  # 20 ms
WINDOW = 640
FEATURES = (
    "quiet_share",
    "syllable_modulation",
    "flux",
    "similarity_20ms",
    "similarity_200ms",
    "flatness",
    "centroid_khz",
    "centroid_spread",
    "share_above_4khz",
    "periodic_share",
    "steady_pitch",
    "long_periodic_share",
)
LONG_RUN_S = 0.3  # voiced syllables rarely last longer; sung and played notes often do
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "pretrained" / "content.json"


class ContentUncertain(ValueError):
    """The classifier cannot tell speech from music with the confidence the caller asked for."""


def features(x: np.ndarray, sr: int) -> np.ndarray:
    """Audio `[channels, time]` or `[time]` (float, any rate in Hz) -> the `FEATURES` vector of its first
    `SECONDS`. Silence and clips shorter than 0.1 s give a vector of NaN (nothing to judge)."""
    x = np.asarray(x, dtype=np.float64)
    mono = x if x.ndim == 1 else x.mean(axis=0)
    mono = mono[: int(SECONDS * sr)]
    if sr != RATE and mono.size:
        mono = soxr.resample(mono, sr, RATE)
    if mono.size < WINDOW + 4 * HOP or not np.any(mono):
        return np.full(len(FEATURES), np.nan)
    frames = np.lib.stride_tricks.sliding_window_view(mono, WINDOW)[::HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(WINDOW), axis=1)) ** 2 + 1e-12  # [frames, bins]
    freqs = np.fft.rfftfreq(WINDOW, 1 / RATE)
    energy = power.sum(axis=1)
    level_db = 10 * np.log10(energy)
    loud = level_db > level_db.max() - 50  # frames inside the clip's 50 dB range
    if loud.sum() < 4:
        return np.full(len(FEATURES), np.nan)

    # Speech pauses between words and phrases: many frames well below the clip's mean level.
    quiet_share = float(np.mean(energy < 0.1 * energy.mean()))
    # Syllables come at 2-8 Hz: the share of the loudness contour's modulation energy in that band.
    contour = level_db.clip(level_db.max() - 50)
    contour = contour - contour.mean()
    mod = np.abs(np.fft.rfft(contour * np.hanning(contour.size))) ** 2
    mod_f = np.fft.rfftfreq(contour.size, HOP / RATE)
    in_band = mod[(mod_f >= 2) & (mod_f <= 8)].sum()
    syllable_modulation = float(in_band / max(mod[(mod_f >= 0.5) & (mod_f <= 20)].sum(), 1e-12))

    logspec = np.log10(power[loud])
    centred = logspec - logspec.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1) + 1e-12

    def similarity(lag: int) -> float:
        if centred.shape[0] <= lag:
            return float("nan")
        dots = np.sum(centred[lag:] * centred[:-lag], axis=1)
        return float(np.mean(dots / (norms[lag:] * norms[:-lag])))

    p = power[loud] / power[loud].sum(axis=1, keepdims=True)
    flux = float(np.mean(np.sqrt(np.sum(np.diff(np.sqrt(p), axis=0) ** 2, axis=1))))
    flatness = float(np.mean(np.exp(np.log(power[loud]).mean(axis=1)) / power[loud].mean(axis=1)))
    centroid = (p * freqs).sum(axis=1) / 1000.0
    share_high = float(np.sum(power[loud][:, freqs >= 4000]) / np.sum(power[loud]))
    return np.array(
        [
            quiet_share,
            syllable_modulation,
            flux,
            similarity(1),
            similarity(10),
            flatness,
            float(np.average(centroid, weights=energy[loud])),
            float(np.std(centroid)),
            share_high,
            *_pitch_features(mono),
        ]
    )


def _pitch_features(mono: np.ndarray) -> tuple[float, float, float]:
    """(share of active 10 ms frames that are periodic, share of periodic frames whose pitch is within 20
    cents of the frame 50 ms later, share of periodic frames in runs of LONG_RUN_S or more). Sung and played
    notes hold their pitch; speech glides and breaks into syllables."""
    acf, energy_db = normalised_autocorrelation(torch.from_numpy(mono).float(), RATE)
    lag, peak = peak_lag(acf, RATE)
    periodic = ((peak > 0.7) & active_frames(energy_db)).numpy()
    active = max(int(active_frames(energy_db).sum()), 1)
    cents = 1200 * np.abs(np.log2(lag[5:].numpy() / lag[:-5].numpy()))
    both = periodic[5:] & periodic[:-5]
    steady = float(np.mean(cents[both] < 20)) if both.any() else 0.0
    edges = np.diff(np.concatenate([[0], periodic.astype(np.int8), [0]]))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    long_share = float(runs[runs * HOP_SECONDS >= LONG_RUN_S].sum() / max(runs.sum(), 1))
    return float(periodic.sum() / active), steady, long_share


@dataclass
class ContentClassifier:
    """Standardised features -> logistic P(music); speech at or below `speech_below`, music at or above
    `music_above`, no decision between. trained_on, held_out: what it was fitted and checked on (text)."""

    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    speech_below: float = 0.3
    music_above: float = 0.5
    trained_on: str = ""
    held_out: str = ""

    def p_music(self, feats: np.ndarray) -> float:
        """P(music) for one `features` vector; NaN for a vector with NaN (silence, a very short clip)."""
        z = (np.asarray(feats) - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = float(z @ np.asarray(self.weights) + self.bias)
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50))) if np.isfinite(logit) else float("nan")

    def classify(self, x: np.ndarray, sr: int) -> tuple[str, float]:
        """("speech" | "music", P(music)) for audio `[channels, time]`; ContentUncertain when P(music) lies
        between the thresholds or the clip has nothing to judge."""
        p = self.p_music(features(x, sr))
        if not np.isfinite(p):
            raise ContentUncertain("too short or silent to tell speech from music")
        if p >= self.music_above:
            return "music", p
        if p <= self.speech_below:
            return "speech", p
        raise ContentUncertain(f"cannot tell speech from music (P(music) {p:.2f})")

    def to_json(self) -> str:
        return json.dumps({"features": list(FEATURES), **asdict(self)}, indent=1) + "\n"

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> ContentClassifier:
        data = json.loads(Path(path).read_text())
        if data.pop("features", None) != list(FEATURES):
            raise ValueError(f"{path}: fitted on other features than this rotcodec computes; refit it")
        return cls(**data)


def fit(speech: np.ndarray, music: np.ndarray, l2: float = 1e-2) -> ContentClassifier:
    """Logistic regression (Newton's method, L2 penalty `l2`) on feature rows `[clips, FEATURES]` of each
    class; rows with NaN are dropped."""
    x = np.concatenate([speech, music])
    y = np.concatenate([np.zeros(len(speech)), np.ones(len(music))])
    keep = np.all(np.isfinite(x), axis=1)
    x, y = x[keep], y[keep]
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    # Each class weighs the same whatever its clip count.
    sample_w = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -50, 50)))
        grad = z.T @ (sample_w * (p - y)) + penalty * w
        hess = (z * (sample_w * p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return ContentClassifier(mean.tolist(), scale.tolist(), w[:-1].tolist(), float(w[-1]))


def clip_features(groups: dict[str, list[str]], count: int, seed: int, longest_s: float = SECONDS) -> np.ndarray:
    """Feature rows `[count, FEATURES]` of `count` random crops, 1 s to `longest_s` long, each of a file drawn
    from a group (speaker, piece's folder) drawn first, so every group weighs the same however many files
    it has; a file shorter than its crop gives all of itself. Training rows like files' openings of any length."""
    rng = np.random.default_rng(seed)
    names = sorted(groups)
    rows = []
    for _ in range(count):
        paths = groups[names[rng.integers(len(names))]]
        with sf.SoundFile(paths[rng.integers(len(paths))]) as f:
            frames = int(min(rng.uniform(1.0, longest_s) * f.samplerate, f.frames))
            f.seek(int(rng.integers(0, max(1, f.frames - frames))))
            rows.append(features(f.read(frames, dtype="float32", always_2d=True).T, f.samplerate))
    return np.array(rows)


def file_features(paths: list[str]) -> np.ndarray:
    """Feature rows `[files, FEATURES]` of each file's first `SECONDS`, as `classify` sees them."""
    rows = []
    for path in paths:
        with sf.SoundFile(path) as f:
            rows.append(features(f.read(int(SECONDS * f.samplerate), dtype="float32", always_2d=True).T, f.samplerate))
    return np.array(rows)
