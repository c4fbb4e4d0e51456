"""Validation diagnostics that catch a codec which stops using its bits.

A known failure of RVQ codecs (seen here on speech16k with full-width 128-d codes): the encoder's latent
collapses onto a handful of directions, the first stage alone quantizes it almost perfectly, and every
further stage (every extra kbps) changes nothing. Two numbers show it early in training:

- `latent_dims`: how many principal directions hold 99% of the latent variance (out of `latent_dim`);
- `mel_nq1` next to `mel`: reconstruction with one stage vs all stages; equal values mean the extra
  stages are unused.
"""

from __future__ import annotations

import torch
from einops import rearrange


@torch.no_grad()
def latent_effective_dims(z: torch.Tensor, fraction: float = 0.99) -> int:
    """Number of principal components of latents `z [batch, dim, time]` (all frames pooled) that hold
    `fraction` of their variance; 0 for constant latents."""
    rows = rearrange(z.detach().double(), "b d t -> (b t) d")
    if rows.shape[0] < 2:
        return 0
    rows = rows - rows.mean(0)
    eig = torch.linalg.eigvalsh(rows.T @ rows / (rows.shape[0] - 1)).flip(0).clamp_min(0.0)
    total = float(eig.sum())
    if total <= 0.0:
        return 0
    return int((eig.cumsum(0) / total < fraction).sum().item()) + 1
