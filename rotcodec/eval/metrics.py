"""Objective audio-quality metrics comparing a reference with an estimate (e.g. a codec's output).

Inputs are numpy arrays `[time]` or `[channels, time]` at `sr` Hz. Multichannel scores are the mean of the
per-channel scores; a length mismatch is trimmed to the shorter signal (remove codec delay first with
`rotcodec.eval.align`). A metric that cannot be computed for a given input (too short for its analysis
window, no speech found by PESQ, ...) returns NaN: the public functions emit a `MetricWarning` with the
reason, and `evaluate` collects the reasons in `MetricReport.notes` instead.

Metrics: SI-SDR (dB), multi-scale log-mel L1 distance (DAC-style, log10 units), multi-resolution STFT
distance (auraloss), PESQ wide-band (MOS-LQO, 16 kHz), STOI (0..1), periodicity error (voicing lost or added,
0..1, `periodicity.py`), pitch error (cents, same file) and, optionally, DNSMOS (needs the
`speechmos` package, which is not a dependency).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import soxr
import torch

from rotcodec.eval.align import AudioInputError, as_channels
from rotcodec.eval.periodicity import periodicity_error as _periodicity_error
from rotcodec.eval.periodicity import pitch_error as _pitch_error

NAN = float("nan")
_Scored = tuple[float, str | None]

# Direction of each metric, for tables and "better than" comparisons.
HIGHER_IS_BETTER: dict[str, bool] = {
    "si_sdr": True,
    "mel_distance": False,
    "mrstft": False,
    "pesq_wb": True,
    "stoi": True,
    "periodicity_error": False,
    "pitch_error": False,
    "dnsmos_ovrl": True,
    "dnsmos_sig": True,
    "dnsmos_bak": True,
    "dnsmos_p808": True,
}


# The columns `evaluate` fills for every input, and those it adds for speech.
GENERAL_METRICS = ("si_sdr", "mel_distance", "mrstft")
SPEECH_METRICS = ("pesq_wb", "stoi", "periodicity_error", "pitch_error")


def metric_names(speech: bool) -> tuple[str, ...]:
    """Names of the metrics `evaluate(..., speech=speech)` reports (DNSMOS aside)."""
    return GENERAL_METRICS + (SPEECH_METRICS if speech else ())


class MetricWarning(UserWarning):
    """A metric returned NaN because it cannot be computed for this input; the message says why."""


@dataclass
class MetricReport:
    """Metric values by name plus, per metric, the reason when it is NaN (and a "length" note on trimming)."""

    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _pair(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, e = as_channels(ref, "ref"), as_channels(est, "est")
    if r.shape[0] != e.shape[0]:
        raise AudioInputError(f"channel mismatch: ref has {r.shape[0]} channels, est has {e.shape[0]}")
    n = min(r.shape[-1], e.shape[-1])
    return r[:, :n], e[:, :n]


def _check_sr(sr: int) -> int:
    if isinstance(sr, bool) or not isinstance(sr, int | np.integer) or sr <= 0:
        raise AudioInputError(f"sample rate must be a positive integer (Hz), got {sr!r}")
    return int(sr)


def _public(name: str, scored: _Scored) -> float:
    value, reason = scored
    if reason is not None:
        warnings.warn(f"{name} is NaN: {reason}", MetricWarning, stacklevel=3)
    return value


def _si_sdr(r: np.ndarray, e: np.ndarray) -> _Scored:
    scores = []
    for ref_c, est_c in zip(r - r.mean(-1, keepdims=True), e - e.mean(-1, keepdims=True), strict=True):
        ref_energy = float(ref_c @ ref_c)
        if ref_energy == 0.0:
            return NAN, "reference is constant (zero energy after mean removal)"
        target = (float(est_c @ ref_c) / ref_energy) * ref_c
        noise = est_c - target
        t_energy, n_energy = float(target @ target), float(noise @ noise)
        if t_energy == 0.0:  # silent or orthogonal estimate
            scores.append(-np.inf)
        elif n_energy == 0.0:
            scores.append(np.inf)
        else:
            scores.append(10.0 * np.log10(t_energy / n_energy))
    return float(np.mean(scores)), None


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean.

    `10 log10(|a r|^2 / |a r - e|^2)` with `a = <e, r> / <r, r>`. Identical signals give `inf` (or a very
    large finite value after rounding); a silent estimate gives `-inf`.
    """
    return _public("si_sdr", _si_sdr(*_pair(ref, est)))


@functools.lru_cache(maxsize=8)
def _mel_module(sr: int) -> torch.nn.Module:
    from rotcodec.losses.mel import MultiScaleMelLoss

    return MultiScaleMelLoss(sr).eval()


def _mel(r: np.ndarray, e: np.ndarray, sr: int) -> _Scored:
    module = _mel_module(sr)
    need = max(m.n_fft for m in module.mels) // 2 + 1
    if r.shape[-1] < need:
        return NAN, f"needs at least {need} samples, got {r.shape[-1]}"
    with torch.no_grad():
        value = module(torch.from_numpy(e[None]).float(), torch.from_numpy(r[None]).float())
    return float(value), None


def mel_distance(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Multi-scale log10-mel L1 distance (rotcodec.losses.mel.MultiScaleMelLoss, DAC-style), 0 if identical.

    Averaged over scales; channels are averaged because the L1 mean runs over them too.
    """
    return _public("mel_distance", _mel(*_pair(ref, est), _check_sr(sr)))


@functools.lru_cache(maxsize=1)
def _mrstft_module() -> torch.nn.Module:
    from auraloss.freq import MultiResolutionSTFTLoss

    return MultiResolutionSTFTLoss().eval()


def _mrstft(r: np.ndarray, e: np.ndarray) -> _Scored:
    module = _mrstft_module()
    need = max(s.fft_size for s in module.stft_losses) // 2 + 1
    if r.shape[-1] < need:
        return NAN, f"needs at least {need} samples, got {r.shape[-1]}"
    values = []
    with torch.no_grad():
        for ref_c, est_c in zip(r, e, strict=True):
            est_t = torch.from_numpy(est_c).float().view(1, 1, -1)
            values.append(float(module(est_t, torch.from_numpy(ref_c).float().view(1, 1, -1))))
    return float(np.mean(values)), None


def mrstft_distance(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """auraloss multi-resolution STFT distance (spectral convergence + log-magnitude L1, FFT sizes
    1024/2048/512 with default hops), 0 if identical. `sr` is validated only: the FFT sizes are in samples."""
    _check_sr(sr)
    return _public("mrstft", _mrstft(*_pair(ref, est)))


def _to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    return x if sr == 16000 else soxr.resample(x, sr, 16000)


def _pesq(r: np.ndarray, e: np.ndarray, sr: int) -> _Scored:
    try:
        import pesq as pesq_lib
    except ImportError:
        return NAN, "the 'pesq' package is not installed (pip install pesq)"
    scores = []
    for ref_c, est_c in zip(r, e, strict=True):
        try:
            scores.append(pesq_lib.pesq(16000, _to_16k(ref_c, sr), _to_16k(est_c, sr), "wb"))
        except pesq_lib.PesqError as exc:
            msg = exc.args[0] if exc.args else ""
            msg = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
            return NAN, f"{type(exc).__name__}: {msg}".rstrip(": ")
    return float(np.mean(scores)), None


def pesq_wb(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """PESQ wide-band MOS-LQO (ITU-T P.862.2, about 1.0..4.64) on speech, resampled to 16 kHz with soxr.

    NaN (with a `MetricWarning`) when PESQ refuses the input, e.g. too short or no utterance detected.
    """
    return _public("pesq_wb", _pesq(*_pair(ref, est), _check_sr(sr)))


def _stoi(r: np.ndarray, e: np.ndarray, sr: int) -> _Scored:
    try:
        from pystoi import stoi as stoi_fn
    except ImportError:
        return NAN, "the 'pystoi' package is not installed (pip install pystoi)"
    scores = []
    for ref_c, est_c in zip(r, e, strict=True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = float(stoi_fn(ref_c, est_c, sr, extended=False))
        # pystoi signals "too few non-silent frames" by a RuntimeWarning and a 1e-5 score.
        if any(issubclass(w.category, RuntimeWarning) and "frames" in str(w.message) for w in caught):
            return NAN, "fewer than 30 non-silent STOI frames (signal too short or silent)"
        scores.append(value)
    return float(np.mean(scores)), None


def stoi(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Short-time objective intelligibility (pystoi, classic STOI, 0..1; resampled to 10 kHz inside)."""
    return _public("stoi", _stoi(*_pair(ref, est), _check_sr(sr)))


def _channel_mean(
    score: Callable[[np.ndarray, np.ndarray, int], float], r: np.ndarray, e: np.ndarray, sr: int, why_nan: str
) -> _Scored:
    """Mean over channels of a per-channel score; NaN with reason `why_nan` when a channel has none."""
    scores = [score(rc, ec, sr) for rc, ec in zip(r, e, strict=True)]
    if any(np.isnan(scores)):
        return NAN, why_nan
    return float(np.mean(scores)), None


def _periodicity(r: np.ndarray, e: np.ndarray, sr: int) -> _Scored:
    return _channel_mean(_periodicity_error, r, e, sr, "shorter than one 40 ms periodicity frame")


def periodicity_error(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """RMS difference of frame periodicity (voicing strength, 0..1) over the reference's active frames: high
    when a codec turns voiced speech into noise-excited speech. See `periodicity.py`."""
    return _public("periodicity_error", _periodicity(*_pair(ref, est), _check_sr(sr)))


def _pitch(r: np.ndarray, e: np.ndarray, sr: int) -> _Scored:
    return _channel_mean(_pitch_error, r, e, sr, "no 40 ms frame voiced in both signals")


def pitch_error(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """RMS F0 difference in cents over the frames voiced in both signals: high when a codec keeps the voicing
    but not the speaker's pitch. See `periodicity.py`."""
    return _public("pitch_error", _pitch(*_pair(ref, est), _check_sr(sr)))


def dnsmos(est: np.ndarray, sr: int) -> dict[str, float] | None:
    """OPTIONAL non-intrusive DNSMOS scores via the `speechmos` package; `None` if it is not importable.

    Returns e.g. `{"dnsmos_ovrl": .., "dnsmos_sig": .., "dnsmos_bak": .., "dnsmos_p808": ..}` (MOS 1..5),
    averaged over channels; audio is resampled to 16 kHz and clipped to [-1, 1] as the models expect.
    """
    try:
        from speechmos import dnsmos as dnsmos_lib
    except ImportError:
        return None
    x = as_channels(est, "est")
    sr = _check_sr(sr)
    per_channel: list[dict[str, float]] = []
    for ch in x:
        out = dnsmos_lib.run(np.clip(_to_16k(ch, sr), -1.0, 1.0).astype(np.float32), 16000)
        per_channel.append({f"dnsmos_{k.removesuffix('_mos')}": float(v) for k, v in out.items() if k.endswith("_mos")})
    return {k: float(np.mean([c[k] for c in per_channel])) for k in per_channel[0]}


def evaluate(ref: np.ndarray, est: np.ndarray, sr: int, speech: bool = True, with_dnsmos: bool = False) -> MetricReport:
    """All metrics at once: `si_sdr`, `mel_distance`, `mrstft`, plus `pesq_wb`, `stoi`, `periodicity_error` and
    `pitch_error` (cents) if `speech`,
    plus `dnsmos_*` if `with_dnsmos` and speechmos is installed. NaN values get a reason in `notes`."""
    sr = _check_sr(sr)
    r, e = _pair(ref, est)
    report = MetricReport()
    n_ref, n_est = np.shape(ref)[-1], np.shape(est)[-1]
    if n_ref != n_est:
        report.notes["length"] = f"trimmed to {r.shape[-1]} samples (ref {n_ref}, est {n_est})"
    scored: dict[str, _Scored] = {"si_sdr": _si_sdr(r, e), "mel_distance": _mel(r, e, sr), "mrstft": _mrstft(r, e)}
    if speech:
        scored["pesq_wb"] = _pesq(r, e, sr)
        scored["stoi"] = _stoi(r, e, sr)
        scored["periodicity_error"] = _periodicity(r, e, sr)
        scored["pitch_error"] = _pitch(r, e, sr)
    for name, (value, reason) in scored.items():
        report.values[name] = value
        if reason is not None:
            report.notes[name] = reason
    if with_dnsmos:
        extra = dnsmos(e, sr)
        if extra is None:
            report.notes["dnsmos"] = "speechmos is not installed (optional: pip install speechmos)"
        else:
            report.values.update(extra)
    return report


def compute_all(ref: np.ndarray, est: np.ndarray, sr: int, speech: bool = True) -> dict[str, float]:
    """`evaluate(ref, est, sr, speech).values`: metric name -> value (NaN where not computable)."""
    return evaluate(ref, est, sr, speech=speech).values
