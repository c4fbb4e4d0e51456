"""Batched k-means used to initialise codebooks from the first training batch."""

from __future__ import annotations

import torch


def nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code for each row, by one matrix product (no `[N, K, d]` broadcast).

    x: `[N, d]`, codebook: `[K, d]` -> `[N]` int64. Computed in float32 (or float64 if given).
    """
    work = torch.promote_types(torch.promote_types(x.dtype, codebook.dtype), torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(work)
        codebook = codebook.to(work)
        # ‖x‖² is the same for every code, so argmin of ‖c‖² − 2 x·c suffices.
        scores = torch.addmm(codebook.pow(2).sum(-1).unsqueeze(0), x, codebook.t(), alpha=-2.0)
        return scores.argmin(dim=-1)


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means on `x [N, d]`, returning `[k, d]` centroids.

    Starts from k random rows (with replacement when N < k); an empty cluster keeps its previous centroid.
    """
    n = x.shape[0]
    x = x.float()
    if n >= k:
        idx = torch.randperm(n, generator=generator, device="cpu")[:k].to(x.device)
    else:
        idx = torch.randint(0, n, (k,), generator=generator, device="cpu").to(x.device)
    centroids = x[idx].clone()
    for _ in range(iters):
        assign = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype).unsqueeze(-1)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1.0), centroids)
    return centroids
