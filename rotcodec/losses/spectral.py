"""Reconstruction losses: multi-resolution STFT (auraloss's), multi-scale mel L1 (from `mel.py`), time-domain L1.

All take `estimate, target` as audio `[batch, channels, time]` (same shape) and return a scalar tensor that
is zero for identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .mel import DEFAULT_SCALES, MultiScaleMelLoss
from .stft import PairSpectra

__all__ = [
    "DEFAULT_SCALES",
    "LossInputError",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
    "PairSpectra",
    "TimeL1Loss",
    "check_pair",
]


class LossInputError(ValueError):
    """Estimate and target of different or unsupported shapes."""


def check_pair(estimate: torch.Tensor, target: torch.Tensor) -> None:
    """Both `[batch, channels, time]` and of the same shape, else `LossInputError`."""
    if estimate.dim() != 3 or estimate.shape != target.shape:
        raise LossInputError(
            f"expected estimate and target [batch, channels, time] of one shape, "
            f"got {tuple(estimate.shape)} and {tuple(target.shape)}"
        )


# auraloss floors the power at 1e-8 before its square root: magnitudes at least 1e-4.
MIN_MAGNITUDE = 1e-4


class MultiResolutionSTFTLoss(nn.Module):
    """auraloss's multi-resolution STFT loss (`auraloss.freq.MultiResolutionSTFTLoss` with its defaults:
    spectral convergence + log-magnitude L1, magnitudes floored at 1e-4), averaged over resolutions, computed
    here so that it can share its STFTs with the mel loss (`PairSpectra`; tests check it against auraloss).
    Defaults: n_fft 2048/1024/512/256/128 with hop n_fft // 4 and window n_fft (suited to 16-24 kHz audio);
    resolutions longer than the input are skipped at call time. Inputs `[batch, channels, time]`; returns a
    scalar."""

    def __init__(
        self,
        fft_sizes: Sequence[int] = (2048, 1024, 512, 256, 128),
        hop_sizes: Sequence[int] | None = None,
        win_lengths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        hops = list(hop_sizes) if hop_sizes is not None else [n // 4 for n in fft_sizes]
        wins = list(win_lengths) if win_lengths is not None else list(fft_sizes)
        if not len(fft_sizes) == len(hops) == len(wins):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
        self.resolutions = [(int(n), int(h), int(w)) for n, h, w in zip(fft_sizes, hops, wins, strict=True)]

    def forward(self, estimate: torch.Tensor, target: torch.Tensor, spectra: PairSpectra | None = None) -> torch.Tensor:
        check_pair(estimate, target)
        length = target.shape[-1]
        usable = [r for r in self.resolutions if r[0] // 2 < length]
        if not usable:
            raise LossInputError(f"input of {length} samples is too short for every STFT resolution")
        spectra = PairSpectra(estimate, target) if spectra is None else spectra
        total = estimate.new_zeros((), dtype=torch.float32)
        for n_fft, hop, win in usable:
            est, ref = spectra.magnitudes(n_fft, hop, win)
            est = est.clamp_min(MIN_MAGNITUDE)
            with torch.no_grad():  # the target's side needs no graph
                ref = ref.clamp_min(MIN_MAGNITUDE)
                ref_norm, ref_log = torch.linalg.vector_norm(ref), torch.log(ref)
            convergence = torch.linalg.vector_norm(ref - est) / ref_norm
            total = total + convergence + F.l1_loss(torch.log(est), ref_log)
        return total / len(usable)


class TimeL1Loss(nn.Module):
    """Mean absolute sample difference."""

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(estimate, target)
        return F.l1_loss(estimate.float(), target.float())
