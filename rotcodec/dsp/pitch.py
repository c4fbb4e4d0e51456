"""Pitch analysis shared by the codec, its losses and its metrics: the autocorrelation pitch tracker and the
pitch code that every `.rcq` pitch symbol means.

Frames for periodicity are 40 ms (two periods of a 60 Hz voice) with a 10 ms hop; the codec's tracker uses
its own frames (two code hops). The pitch code: symbol 0 = unvoiced, 1..127 = F0 log-spaced over
60..400 Hz, about 26 cents apart. Changing any constant here changes what existing `.rcq` files mean.
"""

from __future__ import annotations

import math

import torch

MIN_F0, MAX_F0 = 60.0, 400.0
# A periodic frame's autocorrelation peaks at every multiple of its period, about as high at 2T as at T, so
# pitch takes the shortest lag whose peak reaches this share of the best (`peak_lag`).
OCTAVE_SHARE = 0.9
FRAME_SECONDS, HOP_SECONDS = 0.04, 0.01
ACTIVE_DB = 40.0  # frames quieter than the reference's loudest frame by more than this are not scored
FLOOR_DB = 60.0  # energy floor below the signal's loudest frame: keeps silent frames' gradients finite


def pitch_lags(sample_rate: int) -> tuple[int, int]:
    """(first, last) lag in samples of the autocorrelation columns: 400 Hz down to 60 Hz, capped below one frame."""
    frame = round(FRAME_SECONDS * sample_rate)
    return int(sample_rate / MAX_F0), min(int(-(-sample_rate // MIN_F0)), frame - 1)


def normalised_autocorrelation(
    x: torch.Tensor, sample_rate: int, frame: int | None = None, hop: int | None = None, floor_db: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x `[..., time]` at `sample_rate` Hz -> (normalised autocorrelation `[..., frames, lags]` over the pitch
    lags of 400..60 Hz, about -1..1; frame energy `[..., frames]` in dB). Frames of `frame` samples every
    `hop` (default 40 ms / 10 ms); none when x is shorter than one frame. Differentiable. floor_db: the
    energy floor of the normalisation as a mean square in dB re full scale, the same for every frame (so a
    frame's value depends on that frame alone, as streaming needs); None: FLOOR_DB below the loudest frame
    of x (level-free, but then it depends on the rest of x)."""
    frame = round(FRAME_SECONDS * sample_rate) if frame is None else frame
    hop = round(HOP_SECONDS * sample_rate) if hop is None else hop
    lo, hi = pitch_lags(sample_rate)
    hi = min(hi, frame - 1)
    if x.shape[-1] < frame:
        return x.new_zeros((*x.shape[:-1], 0, hi - lo + 1)), x.new_zeros((*x.shape[:-1], 0))
    frames = x.unfold(-1, frame, hop)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    spec = torch.fft.rfft(frames, n=2 * frame)
    acf = torch.fft.irfft(spec.real**2 + spec.imag**2, n=2 * frame)[..., lo : hi + 1]  # sum x[n] x[n+lag]
    # Normalise each lag by the energies of the two parts it overlaps, x[:N-lag] and x[lag:], so that a
    # frame whose level changes still scores near 1 when it is periodic.
    sq = torch.cumsum(frames**2, dim=-1)
    lags = torch.arange(lo, hi + 1, device=x.device)
    total = sq[..., -1:]
    head = sq[..., frame - 1 - lags]
    tail = total - torch.cat([torch.zeros_like(total), sq], dim=-1)[..., lags]
    if floor_db is None:
        floor = total.detach().amax(dim=-2, keepdim=True) * 10 ** (-FLOOR_DB / 10) + 1e-20  # relative: level-free
    else:
        floor = frame * 10 ** (floor_db / 10)
    energy_db = 10 * torch.log10(total.squeeze(-1) / frame + 1e-12)
    return acf / torch.sqrt((head + floor) * (tail + floor)), energy_db


def frame_periodicity(x: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x `[..., time]` at `sample_rate` Hz -> (periodicity `[..., frames]` in 0..1: the largest normalised
    autocorrelation over pitch lags; energy `[..., frames]` in dB). Differentiable."""
    acf, energy_db = normalised_autocorrelation(x, sample_rate)
    return acf.amax(dim=-1).clamp(0.0, 1.0), energy_db


def peak_lag(acf: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pitch period from `normalised_autocorrelation` rows `[..., frames, lags]` -> (lag `[..., frames]` in
    samples, fractional; peak value `[..., frames]`). A periodic frame's autocorrelation peaks at every
    multiple of its period, about as high at 2T as at T, so the plain argmax often picks a sub-octave: this
    takes the shortest lag whose local peak reaches OCTAVE_SHARE of the best, refined by a parabola through
    the peak and its neighbours. Needs at least 3 lags. Not differentiable."""
    acf = acf.detach()
    best = acf.amax(dim=-1)
    mid = acf[..., 1:-1]
    is_peak = (mid >= acf[..., :-2]) & (mid >= acf[..., 2:]) & (mid >= OCTAVE_SHARE * best.unsqueeze(-1))
    first = is_peak.to(torch.int8).argmax(dim=-1)
    i = torch.where(is_peak.any(dim=-1), first, mid.argmax(dim=-1)).unsqueeze(-1) + 1
    a, b, c = acf.gather(-1, i - 1), acf.gather(-1, i), acf.gather(-1, i + 1)
    curve = a - 2 * b + c
    shift = torch.where(curve < 0, 0.5 * (a - c) / torch.where(curve < 0, curve, -torch.ones_like(curve)), 0.0)
    lag = pitch_lags(sample_rate)[0] + i + shift.clamp(-0.5, 0.5)
    return lag.squeeze(-1), best


def active_frames(energy_db: torch.Tensor) -> torch.Tensor:
    """Boolean mask `[..., frames]`: frames within ACTIVE_DB of the loudest frame of their signal."""
    return energy_db > energy_db.amax(dim=-1, keepdim=True) - ACTIVE_DB


PITCH_SYMBOLS = 128  # symbol 0 = unvoiced; 1..127 = voiced bins
_LOG_LO, _LOG_HI = math.log2(MIN_F0), math.log2(MAX_F0)


def f0_to_symbols(f0: torch.Tensor) -> torch.Tensor:
    """F0 in Hz (0 or NaN = unvoiced) `[...]` -> int64 symbols `[...]` in 0..127."""
    voiced = torch.nan_to_num(f0, nan=0.0) > 0
    pos = (torch.log2(f0.clamp(MIN_F0, MAX_F0)) - _LOG_LO) / (_LOG_HI - _LOG_LO) * (PITCH_SYMBOLS - 2)
    return torch.where(voiced, pos.round().long() + 1, torch.zeros_like(pos, dtype=torch.long))


def symbols_to_f0(symbols: torch.Tensor) -> torch.Tensor:
    """int symbols `[...]` -> F0 in Hz `[...]`, 0 where unvoiced."""
    pos = (symbols.float() - 1).clamp_min(0) / (PITCH_SYMBOLS - 2)
    f0 = torch.exp2(_LOG_LO + pos * (_LOG_HI - _LOG_LO))
    return torch.where(symbols > 0, f0, torch.zeros_like(f0))
