"""Objective audio-quality metrics comparing a reference with an estimate (e.g. a codec's output).

Inputs are numpy arrays `[time]` or `[channels, time]` at `sr` Hz. Multichannel scores are the mean of the
per-channel scores; a length mismatch is trimmed to the shorter signal (remove codec delay first with
`rotcodec.eval.align`). A metric that cannot be computed for a given input (too short for its analysis
window, no speech found by PESQ, ...) returns NaN: the public functions emit a `MetricWarning` with the
reason, and `evaluate` collects the reasons in `MetricReport.notes` instead.

Metrics: SI-SDR (dB), multi-scale log-mel L1 distance (DAC-style, log10 units), multi-resolution STFT
distance (auraloss), PESQ wide-band (MOS-LQO, 16 kHz), STOI (0..1), periodicity error (voicing lost or added,
0..1, `periodicity.py`), pitch error (cents, same file), for music the bandwidth ratio (effective bandwidth of
the estimate over the reference's) and the spectral flatness error (tones turned into noise or back, dB)
and, optionally, DNSMOS (needs the `speechmos` package, which is not a dependency).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
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
    # Above 1 the estimate has content above the reference's band (added noise, aliasing): not better.
    "bandwidth_ratio": True,
    "flatness_error": False,
    "dnsmos_ovrl": True,
    "dnsmos_sig": True,
    "dnsmos_bak": True,
    "dnsmos_p808": True,
}


# The columns `evaluate` fills for every input, and those it adds for speech, or else for music.
GENERAL_METRICS = ("si_sdr", "mel_distance", "mrstft")
SPEECH_METRICS = ("pesq_wb", "stoi", "periodicity_error", "pitch_error")
MUSIC_METRICS = ("bandwidth_ratio", "flatness_error")


def metric_names(speech: bool) -> tuple[str, ...]:
    """Names of the metrics `evaluate(..., speech=speech)` reports (DNSMOS aside)."""
    return GENERAL_METRICS + (SPEECH_METRICS if speech else MUSIC_METRICS)


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


# Bandwidth: Hann frames of _BW_FFT samples at 50 % overlap; the long-term spectrum is smoothed by a moving mean
# over 2 * _BW_SMOOTH + 1 bins and read against a threshold _BW_RANGE_DB below the reference's maximum.
_BW_FFT, _BW_HOP, _BW_SMOOTH, _BW_RANGE_DB = 2048, 1024, 3, 60.0
# Flatness: Hann frames of _FLAT_FFT samples, hop _FLAT_HOP, over the bins from _FLAT_LOW_HZ to
# min(Nyquist, _FLAT_HIGH_HZ), in the reference's frames within _FLAT_ACTIVE_DB of its loudest.
_FLAT_FFT, _FLAT_HOP, _FLAT_LOW_HZ, _FLAT_HIGH_HZ, _FLAT_ACTIVE_DB = 1024, 512, 50.0, 12000.0, 40.0
_FLAT_FLOOR = 1e-6  # bins floored 60 dB below the frame mean: flatness in -60..0 dB
_CHUNK_FRAMES = 512  # frames per FFT batch, so that long files need little memory


def _frame_power(x: np.ndarray, n_fft: int, hop: int) -> Iterator[np.ndarray]:
    """Power spectra `[frames, n_fft // 2 + 1]` of the 1-D signal `x` in periodic-Hann frames starting at 0, hop,
    2 hop, ... (a tail shorter than a frame is left out), in batches of up to `_CHUNK_FRAMES` frames."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = np.hanning(n_fft + 1)[:-1]
    for start in range(0, len(frames), _CHUNK_FRAMES):
        spec = np.fft.rfft(frames[start : start + _CHUNK_FRAMES] * window, axis=-1)
        yield spec.real**2 + spec.imag**2


def _long_term_spectrum(x: np.ndarray) -> np.ndarray:
    """Mean power spectrum `[_BW_FFT // 2 + 1]` over the frames and channels of `x` `[channels, time]` (each
    channel's mean removed first), smoothed by a moving mean over 2 * _BW_SMOOTH + 1 bins (fewer at the ends)."""
    total, count = np.zeros(_BW_FFT // 2 + 1), 0
    for ch in x:
        for power in _frame_power(ch - ch.mean(), _BW_FFT, _BW_HOP):
            total += power.sum(0)
            count += len(power)
    kernel = np.ones(2 * _BW_SMOOTH + 1)
    return np.convolve(total / count, kernel, "same") / np.convolve(np.ones_like(total), kernel, "same")


def _edge_hz(spectrum: np.ndarray, floor_of: np.ndarray, sr: int) -> float:
    """Highest bin frequency (Hz) at which `spectrum`, scaled to the total power of `floor_of` (another long-term
    spectrum, or the same), is within _BW_RANGE_DB of `floor_of`'s maximum; 0 when there is none."""
    if spectrum.sum() > 0.0:
        spectrum = spectrum * (floor_of.sum() / spectrum.sum())
    above = np.flatnonzero(spectrum >= floor_of.max() * 10.0 ** (-_BW_RANGE_DB / 10.0))
    return float(above[-1] * sr / _BW_FFT) if above.size and floor_of.max() > 0.0 else 0.0


def _bandwidth(r: np.ndarray, e: np.ndarray, sr: int) -> _Scored:
    if r.shape[-1] < _BW_FFT:
        return NAN, f"needs at least {_BW_FFT} samples, got {r.shape[-1]}"
    ref_spectrum = _long_term_spectrum(r)
    if ref_spectrum.max() == 0.0:
        return NAN, "reference is silent"
    ref_hz = _edge_hz(ref_spectrum, ref_spectrum, sr)
    if ref_hz == 0.0:
        return NAN, "reference has no content above 0 Hz"
    return _edge_hz(_long_term_spectrum(e), ref_spectrum, sr) / ref_hz, None


def effective_bandwidth_hz(x: np.ndarray, sr: int, floor_of: np.ndarray | None = None) -> float:
    """Effective bandwidth in Hz of `x` (`[time]` or `[channels, time]` at `sr` Hz).

    From the long-term average power spectrum (periodic-Hann frames of 2048 samples, hop 1024, averaged over
    frames and channels after removing each channel's mean, then a moving mean over 7 bins so that no single bin
    decides): the highest bin frequency at which the spectrum is at or above a threshold 60 dB below the
    maximum of the spectrum of `floor_of` (a reference, any length or channel count) or of `x` itself when
    `floor_of` is None. With a `floor_of`, `x`'s spectrum is first scaled to the reference's total power, so
    that a level difference alone does not move the edge. 0.0 when nothing reaches the threshold (e.g. a
    silent `x`); NaN (with a `MetricWarning`) for input shorter than 2048 samples or a silent reference.
    """
    sr = _check_sr(sr)
    sig = as_channels(x, "x")
    ref = sig if floor_of is None else as_channels(floor_of, "floor_of")
    return _public("effective_bandwidth_hz", _bandwidth_hz(sig, ref, sr))


def _bandwidth_hz(x: np.ndarray, ref: np.ndarray, sr: int) -> _Scored:
    n = min(x.shape[-1], ref.shape[-1])
    if n < _BW_FFT:
        return NAN, f"needs at least {_BW_FFT} samples, got {n}"
    floor_of = _long_term_spectrum(ref)
    if floor_of.max() == 0.0:
        return NAN, f"{'signal' if ref is x else 'reference'} is silent"
    return _edge_hz(floor_of if ref is x else _long_term_spectrum(x), floor_of, sr), None


def bandwidth_ratio(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Effective bandwidth of `est` divided by that of `ref` (`[time]` or `[channels, time]` at `sr` Hz).

    Both edges are read against one threshold, 60 dB below the maximum of the reference's long-term spectrum,
    with `est`'s spectrum first scaled to the reference's total power (see `effective_bandwidth_hz`), so that a
    uniformly quieter (or louder) estimate gets the same edge, and its own peaks do not move the threshold.
    1.0 when the estimate reaches as high as the reference; a codec band-limiting full-band 24 kHz music to
    8 kHz gives about 8 / 12 = 0.67; 0.0 for a silent estimate. Above 1 the estimate has
    content above the reference's band (noise, aliasing). NaN (with a `MetricWarning`) for a silent reference or
    input shorter than one 2048-sample frame.
    """
    return _public("bandwidth_ratio", _bandwidth(*_pair(ref, est), _check_sr(sr)))


def _flatness_bins(sr: int) -> tuple[int, int]:
    """First and last FFT bin of the flatness band, 50 Hz .. min(Nyquist, 12 kHz)."""
    lo = int(np.ceil(_FLAT_LOW_HZ * _FLAT_FFT / sr))
    return lo, int(np.floor(min(sr / 2, _FLAT_HIGH_HZ) * _FLAT_FFT / sr))


def _flatness_frames(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of the 1-D signal `x`: spectral flatness in dB (-100..0) and mean power over the analysed bins."""
    lo, hi = _flatness_bins(sr)
    flatness, level = [], []
    for power in _frame_power(x, _FLAT_FFT, _FLAT_HOP):
        band = power[:, lo : hi + 1]
        mean = band.mean(-1)
        floored = band + _FLAT_FLOOR * mean[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.exp(np.log(floored).mean(-1)) / floored.mean(-1)
        ratio = np.where(mean > 0.0, ratio, 1.0)  # a digitally silent frame: its (zero) floor is flat
        flatness.append(10.0 * np.log10(np.maximum(ratio, _FLAT_FLOOR)))
        level.append(mean)
    return np.concatenate(flatness), np.concatenate(level)


def _flatness(r: np.ndarray, e: np.ndarray, sr: int) -> _Scored:
    if r.shape[-1] < _FLAT_FFT:
        return NAN, f"needs at least {_FLAT_FFT} samples, got {r.shape[-1]}"
    lo, hi = _flatness_bins(sr)
    if hi <= lo:
        return NAN, f"sample rate {sr} Hz leaves no band above {_FLAT_LOW_HZ:g} Hz"
    errors = []
    for c, (ref_c, est_c) in enumerate(zip(r, e, strict=True)):
        ref_flat, ref_level = _flatness_frames(ref_c, sr)
        if ref_level.max() == 0.0:
            where = "" if len(r) == 1 else f" (channel {c})"
            return NAN, f"reference is silent{where} between {_FLAT_LOW_HZ:g} Hz and {min(sr / 2, _FLAT_HIGH_HZ):g} Hz"
        active = ref_level >= ref_level.max() * 10.0 ** (-_FLAT_ACTIVE_DB / 10.0)
        errors.append(float(np.abs(ref_flat - _flatness_frames(est_c, sr)[0])[active].mean()))
    return float(np.mean(errors)), None


def flatness_error(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Mean absolute difference of spectral flatness in dB between `ref` and `est` (`[time]` or
    `[channels, time]` at `sr` Hz) over the reference's active frames; 0 if identical, lower is better. In dB
    because music's flatness spans decades near 0: on a linear 0..1 scale every codec's error on music was the
    same 0.006. A noise floor 40 dB under a pure tone already moves it by about 14 dB.

    Flatness of a frame (periodic Hann, 1024 samples, hop 512): the geometric over the arithmetic mean of its
    power spectrum over the bins from 50 Hz to min(Nyquist, 12 kHz), each bin floored at 60 dB below the
    frame's mean power (so -60 dB at the lowest, pure tones; about -2.5 dB for white noise, 0 dB for a
    digitally silent frame). Active:
    the reference frame's power in that band is within 40 dB of its loudest frame's. A codec that turns tones
    into noise raises it, and so does one that cuts off the band's top (the missing bins are far below the
    mean). Averaged over channels; NaN (with a `MetricWarning`) for a silent reference (channel) or input
    shorter than one frame.
    """
    return _public("flatness_error", _flatness(*_pair(ref, est), _check_sr(sr)))


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
    `pitch_error` (cents) if `speech`, else `bandwidth_ratio` and `flatness_error` (music),
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
    else:
        scored["bandwidth_ratio"] = _bandwidth(r, e, sr)
        scored["flatness_error"] = _flatness(r, e, sr)
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
