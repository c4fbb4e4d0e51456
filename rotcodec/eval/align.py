"""Delay estimation and compensation between a reference signal and a (decoded) estimate.

Convention everywhere: a positive `delay` means the estimate lags the reference, i.e.
`est[n + delay] ~ ref[n]`. Signals are numpy arrays `[time]` or `[channels, time]` (samples).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.signal import correlate


class AudioInputError(ValueError):
    """Audio given to an eval function has the wrong shape, type or content."""


def as_channels(x: np.ndarray, name: str = "signal") -> np.ndarray:
    """Validate a `[time]` or `[channels, time]` array and return it as float64 `[channels, time]`."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise AudioInputError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise AudioInputError(f"{name} must be [time] or [channels, time], got shape {arr.shape}")
    if arr.shape[-1] == 0 or arr.shape[0] == 0:
        raise AudioInputError(f"{name} is empty (shape {arr.shape})")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise AudioInputError(f"{name} contains NaN or Inf")
    return arr


def _envelope(x: np.ndarray, win: int) -> np.ndarray:
    """Zero-mean RMS envelope per channel, `[channels, time]`, smoothed with a Hann window of `win` samples."""
    kernel = np.hanning(win + 2)[1:-1]
    kernel /= kernel.sum()
    env = np.sqrt(np.stack([np.convolve(ch * ch, kernel, mode="same") for ch in x]))
    return env - env.mean(axis=-1, keepdims=True)


def correlation_peak(
    ref: np.ndarray,
    est: np.ndarray,
    max_lag: int,
    method: Literal["waveform", "envelope"] = "waveform",
    envelope_window: int = 80,
) -> tuple[int, float]:
    """Lag of the cross-correlation peak within `[-max_lag, max_lag]` and its normalised height in [0, 1].

    `method="waveform"` correlates the signals themselves (waveform codecs: MP3, Opus); the peak of
    |correlation| is used so a polarity flip still aligns. `method="envelope"` correlates RMS envelopes
    (window `envelope_window` samples), for parametric codecs such as Codec2 whose output phase is
    synthetic. Multichannel correlations are summed over channels (channel counts must match).
    """
    r, e = as_channels(ref, "ref"), as_channels(est, "est")
    if r.shape[0] != e.shape[0]:
        raise AudioInputError(f"channel mismatch: ref has {r.shape[0]}, est has {e.shape[0]}")
    if int(max_lag) < 0:
        raise AudioInputError(f"max_lag must be >= 0, got {max_lag}")
    if method == "envelope":
        r, e = _envelope(r, envelope_window), _envelope(e, envelope_window)
    elif method != "waveform":
        raise AudioInputError(f"unknown method {method!r}; use 'waveform' or 'envelope'")
    corr = sum(correlate(e[c], r[c], mode="full", method="fft") for c in range(r.shape[0]))
    lags = np.arange(-r.shape[-1] + 1, e.shape[-1])
    keep = np.abs(lags) <= int(max_lag)
    corr, lags = corr[keep], lags[keep]
    score = np.abs(corr) if method == "waveform" else corr
    best = int(np.argmax(score))
    norm = float(np.sqrt(np.sum(r * r) * np.sum(e * e)))
    height = float(score[best] / norm) if norm > 0 else 0.0
    return int(lags[best]), height


def estimate_delay(
    ref: np.ndarray,
    est: np.ndarray,
    max_lag: int,
    method: Literal["waveform", "envelope"] = "waveform",
    envelope_window: int = 80,
) -> int:
    """Delay of `est` relative to `ref` in samples (positive: est lags), searched within +-`max_lag`.

    Uses FFT cross-correlation; see `correlation_peak` for `method` (the envelope window is in samples:
    80 is 5 ms at 16 kHz, scale it with the rate). Inputs `[time]` or `[channels, time]`.
    """
    return correlation_peak(ref, est, max_lag, method, envelope_window)[0]


def align(ref: np.ndarray, est: np.ndarray, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove `delay` (samples, positive: est lags ref) and trim both to their common length.

    Inputs `[time]` or `[channels, time]` (time is the last axis); returns views `(ref_aligned,
    est_aligned)` with equal last-axis length. Raises `AudioInputError` if nothing overlaps.
    """
    r, e = np.asarray(ref), np.asarray(est)
    d = int(delay)
    if d >= 0:
        e = e[..., d:]
    else:
        r = r[..., -d:]
    n = min(r.shape[-1], e.shape[-1])
    if n <= 0:
        raise AudioInputError(f"delay {d} leaves no overlap (ref {r.shape[-1]}, est {e.shape[-1]} samples left)")
    return r[..., :n], e[..., :n]


def compensate_delay(est: np.ndarray, delay: int, length: int) -> np.ndarray:
    """Shift `est` earlier by `delay` samples (later if negative) and zero-pad/trim it to `length` samples.

    `est` is `[time]` or `[channels, time]`; returns a new array of the same dtype with last axis `length`.
    """
    e = np.asarray(est)
    d = int(delay)
    if length < 0:
        raise AudioInputError(f"length must be >= 0, got {length}")
    if d >= 0:
        shifted = e[..., d:]
    else:
        pad = np.zeros(e.shape[:-1] + (-d,), dtype=e.dtype)
        shifted = np.concatenate([pad, e], axis=-1)
    out = np.zeros(e.shape[:-1] + (length,), dtype=e.dtype)
    n = min(length, shifted.shape[-1])
    out[..., :n] = shifted[..., :n]
    return out
