"""Frame-wise periodicity (how strongly voiced each frame is) and the periodicity error between a reference
and a codec's output.

A codec whose decoder reproduces the spectral envelope but not the voice's harmonics (a noise-excited,
whispery output) scores well on mel distance and badly on PESQ/STOI; this metric names that failure
directly. Periodicity of a frame = the largest normalised autocorrelation over pitch lags of 60..400 Hz:
about 0.8-1 for voiced speech, about 0.1-0.3 for noise. The periodicity error (CARGAN's metric, Morrison
et al. 2022, there computed with CREPE) is the RMS difference over the reference's active frames.

Audio is 1-D `[time]` at `sr` Hz, resampled to 16 kHz; frames are 40 ms with a 10 ms hop.
"""

from __future__ import annotations

import numpy as np
import soxr

ANALYSIS_SR = 16000
FRAME = 640  # 40 ms: at least two periods of a 60 Hz voice
HOP = 160
MIN_F0, MAX_F0 = 60.0, 400.0
ACTIVE_DB = 40.0  # frames quieter than the loudest frame by more than this are silence and not scored


def _frames(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] < FRAME:
        return np.zeros((0, FRAME))
    idx = np.arange(0, x.shape[-1] - FRAME + 1, HOP)[:, None] + np.arange(FRAME)[None, :]
    frames = x[idx]
    return frames - frames.mean(axis=1, keepdims=True)


def frame_periodicity(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """x `[time]` at `sr` Hz -> (periodicity `[frames]` in 0..1, frame energy `[frames]` in dB)."""
    x = np.asarray(x, dtype=np.float64)
    if sr != ANALYSIS_SR:
        x = soxr.resample(x, sr, ANALYSIS_SR)
    frames = _frames(x)
    lo, hi = int(ANALYSIS_SR / MAX_F0), int(np.ceil(ANALYSIS_SR / MIN_F0))
    spec = np.fft.rfft(frames, n=2 * FRAME, axis=1)
    acf = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, : hi + 1]  # sum_n x[n] x[n + lag]
    # Energies of the two overlapping parts, x[0:N-lag] and x[lag:N], normalise each lag separately so
    # that a decaying voiced frame still scores near 1.
    sq = np.cumsum(frames**2, axis=1)
    lags = np.arange(lo, hi + 1)
    head = sq[:, FRAME - 1 - lags]
    tail = sq[:, -1:] - np.concatenate([np.zeros((len(frames), 1)), sq], axis=1)[:, lags]
    norm = np.sqrt(np.maximum(head * tail, 1e-20))
    periodicity = np.clip((acf[:, lags] / norm).max(axis=1, initial=0.0), 0.0, 1.0)
    energy_db = 10 * np.log10(np.maximum(sq[:, -1] / FRAME, 1e-12))
    return periodicity, energy_db


def periodicity_error(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """RMS periodicity difference over the reference's active frames (0 = same voicing; lower is better).

    `ref`, `est`: `[time]` at `sr` Hz, aligned. NaN when the reference has no frame (shorter than 40 ms)."""
    p_ref, e_ref = frame_periodicity(ref, sr)
    p_est, _ = frame_periodicity(est, sr)
    n = min(len(p_ref), len(p_est))
    if n == 0:
        return float("nan")
    p_ref, p_est, e_ref = p_ref[:n], p_est[:n], e_ref[:n]
    active = e_ref > e_ref.max() - ACTIVE_DB
    return float(np.sqrt(np.mean((p_ref[active] - p_est[active]) ** 2)))
