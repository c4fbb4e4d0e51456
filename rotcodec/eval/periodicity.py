"""Periodicity error between a reference and a codec's output: how much voicing the codec lost or added.

A codec whose decoder reproduces the spectral envelope but not the voice's harmonics (a noise-excited,
whispery output) scores well on mel distance and badly on PESQ/STOI; this metric names that failure. It
is the RMS difference of frame periodicity (`rotcodec.dsp.pitch`: the largest normalised
autocorrelation over 60..400 Hz pitch lags, 40 ms frames, 10 ms hop) over the reference's active frames,
after CARGAN's periodicity metric (Morrison et al. 2022, there computed with CREPE). Audio is resampled
to 16 kHz first so that every codec is measured on the same frames.

Pitch error is its companion: a decoder can be voiced at the wrong pitch (two thirds of the step-18000
default model's voiced frames sit at 190-210 Hz whatever the speaker does: docs/results/harmonics/
f0_distribution.py), which periodicity error does not see. It is
the RMS F0 difference in cents over frames voiced in both signals, F0 read from the same autocorrelation.
"""

from __future__ import annotations

import numpy as np
import soxr
import torch

from rotcodec.dsp.pitch import active_frames, normalised_autocorrelation, peak_lag
from rotcodec.dsp.pitch import frame_periodicity as _frame_periodicity

ANALYSIS_SR = 16000
VOICED = 0.5  # a frame whose autocorrelation peak is above this counts as voiced for the pitch error


def _at_analysis_rate(x: np.ndarray, sr: int) -> torch.Tensor:
    """x `[time]` at `sr` Hz -> float64 tensor `[time]` at 16 kHz."""
    x = np.asarray(x, dtype=np.float64)
    if sr != ANALYSIS_SR:
        x = soxr.resample(x, sr, ANALYSIS_SR)
    return torch.from_numpy(np.ascontiguousarray(x))


def frame_periodicity(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """x `[time]` at `sr` Hz -> (periodicity `[frames]` in 0..1, frame energy `[frames]` in dB), 16 kHz frames."""
    p, e = _frame_periodicity(_at_analysis_rate(x, sr), ANALYSIS_SR)
    return p.numpy(), e.numpy()


def frame_pitch(x: np.ndarray, sr: int) -> np.ndarray:
    """x `[time]` at `sr` Hz -> F0 `[frames]` in Hz (60..400), NaN in unvoiced or inactive frames; 40 ms
    frames, 10 ms hop. The lag comes from `dsp.pitch.peak_lag`."""
    acf, energy_db = normalised_autocorrelation(_at_analysis_rate(x, sr), ANALYSIS_SR)
    f0 = np.full(acf.shape[0], np.nan)
    if acf.shape[0] == 0 or acf.shape[1] < 3:
        return f0
    lag, best = peak_lag(acf, ANALYSIS_SR)
    voiced = ((best > VOICED) & active_frames(energy_db)).numpy()
    f0[voiced] = ANALYSIS_SR / lag.numpy()[voiced]
    return f0


def periodicity_error(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """RMS periodicity difference over the reference's active frames (0 = same voicing; lower is better).

    `ref`, `est`: `[time]` at `sr` Hz, aligned. NaN when the reference is shorter than one 40 ms frame."""
    p_ref, e_ref = frame_periodicity(ref, sr)
    p_est, _ = frame_periodicity(est, sr)
    n = min(len(p_ref), len(p_est))
    if n == 0:
        return float("nan")
    active = active_frames(torch.from_numpy(e_ref[:n])).numpy()
    return float(np.sqrt(np.mean((p_ref[:n][active] - p_est[:n][active]) ** 2)))


def pitch_error(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """RMS F0 difference in cents over the frames voiced in both signals (0 = same pitch; 100 cents = one
    semitone; octave errors count 1200). `ref`, `est`: `[time]` at `sr` Hz, aligned. NaN when no frame is
    voiced in both."""
    f_ref, f_est = frame_pitch(ref, sr), frame_pitch(est, sr)
    n = min(len(f_ref), len(f_est))
    both = ~np.isnan(f_ref[:n]) & ~np.isnan(f_est[:n])
    if not both.any():
        return float("nan")
    return float(np.sqrt(np.mean((1200 * np.log2(f_est[:n][both] / f_ref[:n][both])) ** 2)))
