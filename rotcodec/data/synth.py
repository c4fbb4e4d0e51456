"""Deterministic generated audio for tests and CI (no downloads, no real recordings).

Each kind exercises a different part of a codec: harmonic tones with vibrato (pitch tracking, tonal
partials), noise bursts (transients, broadband noise), log chirps (every frequency band) and speech-like
formant signals (a pulse source through moving vowel formants with syllable envelopes). Output is float32
[1, time] with peak 0.5; the same (kind, seconds, sr, seed) always gives the same samples.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from rotcodec.audio import save_audio

KINDS = ("tone", "noise", "chirp", "speech")
PEAK = 0.5

# (F1, F2, F3) in Hz for a handful of vowels; enough variety to move formants around.
_VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410], [660, 1720, 2410]],
    dtype=np.float64,
)
_BANDWIDTHS = np.array([80.0, 100.0, 140.0])


def _rng(kind: str, seed: int) -> np.random.Generator:
    # crc32 (not hash()) so the stream is identical across processes and Python versions.
    return np.random.default_rng([zlib.crc32(kind.encode()), int(seed) & 0xFFFFFFFF])


def _phase(freq_hz: np.ndarray, sr: int) -> np.ndarray:
    return 2 * np.pi * np.cumsum(freq_hz) / sr


def _finish(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0:
        x = x * (PEAK / peak)
    return x.astype(np.float32)[None, :]


def _tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    out = np.zeros(n)
    note_len = max(1, int(sr * rng.uniform(0.3, 0.8)))
    for start in range(0, n, note_len):
        m = min(note_len, n - start)
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)  # A2..A5 on a semitone grid
        depth, rate = rng.uniform(0.005, 0.03), rng.uniform(4.0, 7.0)
        freq = f0 * (1 + depth * np.sin(2 * np.pi * rate * t[:m]))
        phase = _phase(freq, sr)
        n_harm = max(1, min(12, int(0.45 * sr / f0)))
        tilt = rng.uniform(0.7, 1.3)
        note = sum(np.sin(k * phase) / k**tilt for k in range(1, n_harm + 1))
        attack = max(1, int(0.02 * sr))
        env = np.minimum(1.0, np.arange(m) / attack) * np.exp(-np.arange(m) / (sr * rng.uniform(0.3, 1.5)))
        out[start : start + m] = note * env
    return out


def _noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    out = 0.01 * rng.standard_normal(n)  # low floor so crops are rarely exactly silent
    n_bursts = max(1, int(n / sr * rng.uniform(2, 6)))
    for _ in range(n_bursts):
        start = int(rng.integers(0, n))
        m = min(n - start, int(sr * rng.uniform(0.02, 0.4)))
        burst = rng.standard_normal(m)
        if rng.random() < 0.5:  # leaky integration -> darker, pink-ish burst
            burst = np.cumsum(burst) * 0.1
            burst -= np.linspace(burst[0], burst[-1], m) if m > 1 else burst
        decay = np.exp(-np.arange(m) / (sr * rng.uniform(0.01, 0.15)))
        out[start : start + m] += burst * decay * rng.uniform(0.3, 1.0)
    return out


def _chirp(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f_lo, f_hi = rng.uniform(40, 120), 0.45 * sr
    u = np.arange(n) / max(n - 1, 1)
    if rng.random() < 0.5:
        u = u[::-1]  # downward sweep
    freq = f_lo * (f_hi / f_lo) ** u
    return np.sin(_phase(freq, sr)) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * u))


def _speech(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    base = rng.uniform(90, 220)  # speaker pitch
    f0 = base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6.3)))
    f0 *= 1 + 0.01 * np.sin(2 * np.pi * 5.5 * t)
    phase = _phase(f0, sr)
    # Vowel targets every ~120 ms, linearly interpolated: formants glide like coarticulated speech.
    hop = max(1, int(0.12 * sr))
    n_targets = n // hop + 2
    targets = _VOWELS[rng.integers(0, len(_VOWELS), n_targets)] * rng.uniform(0.9, 1.15)
    pos = np.arange(n) / hop
    formants = np.stack([np.interp(pos, np.arange(n_targets), targets[:, j]) for j in range(3)], axis=1)
    voiced = np.zeros(n)
    n_harm = max(1, int(min(0.45 * sr, 6000.0) / f0.min()))  # formant energy above 6 kHz is negligible
    for k in range(1, n_harm + 1):
        fk = k * f0
        gain = np.zeros(n)
        for j in range(3):  # resonance magnitude of each formant at this harmonic
            gain += 1.0 / (1.0 + ((fk - formants[:, j]) / _BANDWIDTHS[j]) ** 2) / (j + 1)
        voiced += gain * np.sin(k * phase) / np.sqrt(k)
    # Syllable envelope (~4 Hz) with pauses; unvoiced frication between syllables.
    syll = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.3)), 0, None) ** 0.7
    pause = (np.sin(2 * np.pi * rng.uniform(0.3, 0.6) * t + rng.uniform(0, 6.3)) > -0.6).astype(float)
    hiss = rng.standard_normal(n)
    hiss = np.diff(hiss, prepend=0.0)  # emphasise highs like /s/
    fricative = rng.random(n_targets)[np.minimum(pos.astype(int), n_targets - 1)] > 0.6
    fric = 0.05 * hiss * np.clip(1 - syll, 0, 1) * fricative
    return (voiced * syll + fric) * pause


_MAKERS = {"tone": _tone, "noise": _noise, "chirp": _chirp, "speech": _speech}


def synth_clip(kind: str, seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Generate one deterministic clip.

    Args:
        kind: "tone", "noise", "chirp" or "speech".
        seconds: duration in seconds (> 0).
        sr: sample rate in Hz.
        seed: any int; each (kind, seed) pair is an independent stream.
    Returns:
        float32 [1, round(seconds * sr)], peak 0.5.
    """
    if kind not in _MAKERS:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose from {list(KINDS)}")
    n = int(round(seconds * sr))
    if n <= 0 or sr <= 0:
        raise ValueError(f"need seconds > 0 and sr > 0, got seconds={seconds}, sr={sr}")
    return _finish(_MAKERS[kind](n, sr, _rng(kind, seed)))


def write_synthetic_corpus(
    out_dir: str | Path,
    n_files: int,
    seconds: float,
    sr: int,
    seed: int = 0,
    kinds: tuple[str, ...] = KINDS,
    force: bool = False,
) -> list[Path]:
    """Write `n_files` 16-bit WAV clips cycling through `kinds` into out_dir/spk<k>/<kind>_<i>.wav.

    Files are spread over four pseudo-speaker folders so speaker-based splits can be exercised.
    Returns the written paths in order.
    """
    out = Path(out_dir)
    paths = []
    for i in range(n_files):
        kind = kinds[i % len(kinds)]
        path = out / f"spk{i % 4}" / f"{kind}_{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_audio(path, synth_clip(kind, seconds, sr, seed * 100_003 + i), sr, force=force)
        paths.append(path)
    return paths
