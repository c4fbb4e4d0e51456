"""Periodicity error between a reference and a codec's output: how much voicing the codec lost or added.

A codec whose decoder reproduces the spectral envelope but not the voice's harmonics (a noise-excited,
whispery output) scores well on mel distance and badly on PESQ/STOI; this metric names that failure. It
is the RMS difference of frame periodicity (`rotcodec.losses.periodicity`: the largest normalised
autocorrelation over 60..400 Hz pitch lags, 40 ms frames, 10 ms hop) over the reference's active frames,
after CARGAN's periodicity metric (Morrison et al. 2022, there computed with CREPE). Audio is resampled
to 16 kHz first so that every codec is measured on the same frames.
"""

from __future__ import annotations

import numpy as np
import soxr
import torch

from rotcodec.losses.periodicity import active_frames
from rotcodec.losses.periodicity import frame_periodicity as _frame_periodicity

ANALYSIS_SR = 16000


def frame_periodicity(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """x `[time]` at `sr` Hz -> (periodicity `[frames]` in 0..1, frame energy `[frames]` in dB), 16 kHz frames."""
    x = np.asarray(x, dtype=np.float64)
    if sr != ANALYSIS_SR:
        x = soxr.resample(x, sr, ANALYSIS_SR)
    p, e = _frame_periodicity(torch.from_numpy(np.ascontiguousarray(x)), ANALYSIS_SR)
    return p.numpy(), e.numpy()


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
