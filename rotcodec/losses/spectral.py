"""Reconstruction losses: multi-resolution STFT (auraloss), multi-scale mel L1 (from `mel.py`), time-domain L1.

All take `estimate, target` as audio `[batch, channels, time]` (same shape) and return a scalar tensor that
is zero for identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import auraloss
import torch
import torch.nn.functional as F
from torch import nn

from .mel import DEFAULT_SCALES, MultiScaleMelLoss

__all__ = [
    "DEFAULT_SCALES",
    "LossInputError",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
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


class MultiResolutionSTFTLoss(nn.Module):
    """auraloss's multi-resolution STFT loss (spectral convergence + log-magnitude L1), averaged over
    resolutions. Defaults: n_fft 2048/1024/512/256/128 with hop n_fft // 4 and window n_fft (suited to
    16-24 kHz audio); resolutions longer than the input are skipped at call time."""

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
        self.losses = nn.ModuleList(
            auraloss.freq.STFTLoss(fft_size=n, hop_size=h, win_length=w)
            for n, h, w in zip(fft_sizes, hops, wins, strict=True)
        )

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(estimate, target)
        length = target.shape[-1]
        usable = [loss for loss in self.losses if loss.fft_size // 2 < length]
        if not usable:
            raise LossInputError(f"input of {length} samples is too short for every STFT resolution")
        estimate, target = estimate.float(), target.float()
        return sum(loss(estimate, target) for loss in usable) / len(usable)


class TimeL1Loss(nn.Module):
    """Mean absolute sample difference."""

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(estimate, target)
        return F.l1_loss(estimate.float(), target.float())
