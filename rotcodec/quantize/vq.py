"""One vector-quantizer stage: nearest-code search, gradient estimator, codebook learning, statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .distributed import all_reduce_sum_, broadcast_, is_distributed
from .kmeans import kmeans, nearest, nearest_in_prefixes
from .rotation import RotationRule, rotate_to, straight_through

ESTIMATORS = ("rotation", "ste")
FACTORISED_VALUES = ("unit", "raw")


@dataclass
class VQConfig:
    """One stage's settings.

    dim: input vector size. codebook_size: K codes. codebook_dim: if set, factorised codes (DAC): project
    to this many dims, L2-normalise, look up there, project back. factorised_values: what a factorised stage
    returns: "unit" the L2-normalised code (its scale is unrelated to the input's), "raw" (DAC) the raw code
    vector, learned against the un-normalised projection (search is by cosine in both). In trained speech
    models neither makes the residual shrink from stage to stage (docs/results/residual_scale). "unit" is
    the default so that model files written before the option existed load unchanged.
    estimator: "rotation" or "ste".
    ema_decay: EMA codebook learning with this decay; None learns the codebook by the codebook loss.
    commitment_weight: β of β‖e − sg(q)‖². codebook_weight: weight of ‖sg(e) − q‖² (None-EMA mode only).
    kmeans_init/kmeans_iters: initialise from the first training batch. dead_code_threshold: a code whose
    EMA usage count (per batch) falls below this is replaced by a random current input (0 disables).
    usage_decay: EMA decay of usage counts when the codebook is learned by loss.
    """

    dim: int = 128
    codebook_size: int = 1024
    codebook_dim: int | None = None
    factorised_values: str = "unit"
    estimator: str = "rotation"
    ema_decay: float | None = 0.99
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: float = 2.0
    usage_decay: float = 0.99
    rule: RotationRule = field(default_factory=RotationRule)

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.factorised_values not in FACTORISED_VALUES:
            raise ValueError(f"factorised_values must be one of {FACTORISED_VALUES}, got {self.factorised_values!r}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class StageOutput:
    """Rows `[N, dim]`: `out` carries the estimator's gradient, `value` is the detached quantized value."""

    out: torch.Tensor
    value: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor
    codebook_loss: torch.Tensor
    stats: dict[str, torch.Tensor]


class VectorQuantizer(nn.Module):
    """A single VQ stage over rows `[N, dim]` (callers flatten `[batch, dim, time]`)."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        # Set by training (`train.compile`): the rotation trick as one compiled kernel each way. Not config: the
        # model computes the same function either way.
        self.fused_rotation = False
        self.cfg = cfg
        k = cfg.codebook_size
        self.lookup_dim = cfg.codebook_dim or cfg.dim
        self.factorised = cfg.codebook_dim is not None
        self.raw_values = self.factorised and cfg.factorised_values == "raw"
        if self.factorised:
            self.in_proj = weight_norm(nn.Linear(cfg.dim, self.lookup_dim))
            self.out_proj = weight_norm(nn.Linear(self.lookup_dim, cfg.dim))
        init = torch.randn(k, self.lookup_dim) * (1.0 / math.sqrt(self.lookup_dim))
        if cfg.ema_decay is None:
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            self.register_buffer("embed_avg", init.clone())
        self.register_buffer("cluster_size", torch.ones(k))
        self.register_buffer("initted", torch.tensor(not cfg.kmeans_init))
        self._init_checked = False  # caches `initted` on the host: reading it is a device sync

    # -- lookup space --------------------------------------------------------------------------------
    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """Rows `[N, dim]` -> the vectors this stage quantizes and learns its codebook from."""
        if not self.factorised:
            return x
        z = self.in_proj(x)
        return z if self.raw_values else F.normalize(z, dim=-1)

    def _search_key(self, z: torch.Tensor) -> torch.Tensor:
        """Projected rows -> search keys: cosine search for raw values ("unit" projections are already unit)."""
        return F.normalize(z, dim=-1) if self.raw_values else z

    def _from_lookup(self, z: torch.Tensor) -> torch.Tensor:
        return self.out_proj(z) if self.factorised else z

    def lookup_codebook(self) -> torch.Tensor:
        """Codebook `[K, lookup_dim]` as used for search (L2-normalised when factorised)."""
        return F.normalize(self.codebook, dim=-1) if self.factorised else self.codebook

    def value_codebook(self) -> torch.Tensor:
        """Codebook `[K, lookup_dim]` as returned by a lookup, before the output projection."""
        return self.codebook if self.raw_values else self.lookup_codebook()

    # -- codebook learning ---------------------------------------------------------------------------
    @torch.no_grad()
    def _kmeans_init(self, z: torch.Tensor) -> None:
        centroids = kmeans(z.detach(), self.cfg.codebook_size, self.cfg.kmeans_iters)
        broadcast_(centroids)  # rank 0's codebook for everyone: one codebook under DDP
        self.codebook.data.copy_(centroids)
        if self.cfg.ema_decay is not None:
            self.embed_avg.copy_(centroids)
        self.cluster_size.fill_(1.0)
        self.initted.fill_(True)

    @torch.no_grad()
    def _update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        cfg = self.cfg
        k = cfg.codebook_size
        counts = torch.bincount(codes, minlength=k).to(z.dtype)
        all_reduce_sum_(counts)
        decay = cfg.ema_decay if cfg.ema_decay is not None else cfg.usage_decay
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        if cfg.ema_decay is not None:
            sums = torch.zeros_like(self.embed_avg).index_add_(0, codes, z.to(self.embed_avg.dtype))
            all_reduce_sum_(sums)
            self.embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
            n = self.cluster_size.sum()
            eps = 1e-5
            smoothed = (self.cluster_size + eps) / (n + k * eps) * n  # Laplace smoothing
            self.codebook.copy_(self.embed_avg / smoothed.unsqueeze(-1))
        if cfg.dead_code_threshold > 0:
            self._replace_dead(z)

    @torch.no_grad()
    def _replace_dead(self, z: torch.Tensor) -> None:
        """Replace codes used less than the threshold by random current inputs. On an accelerator every code
        goes through `torch.where` (no host sync); on the CPU, where counting the dead codes costs nothing,
        only the dead codes are written (a tenth of the time for 1024 codes)."""
        k = self.cfg.codebook_size
        dead = self.cluster_size < self.cfg.dead_code_threshold
        if z.device.type == "cpu":
            self._replace_rows(z, dead.nonzero().squeeze(1))
            return
        pick = torch.randint(0, z.shape[0], (k,), device=z.device)
        fresh = z[pick].to(self.codebook.dtype)
        broadcast_(fresh)
        self.codebook.data.copy_(torch.where(dead.unsqueeze(-1), fresh, self.codebook.data))
        # A revived code starts at the threshold so it is not replaced again before it can be used.
        self.cluster_size.copy_(
            torch.where(dead, torch.full_like(self.cluster_size, self.cfg.dead_code_threshold), self.cluster_size)
        )
        if self.cfg.ema_decay is not None:
            self.embed_avg.copy_(torch.where(dead.unsqueeze(-1), fresh * self.cfg.dead_code_threshold, self.embed_avg))

    def _replace_rows(self, z: torch.Tensor, index: torch.Tensor) -> None:
        """Codes `index` [n] become random rows of `z`, their counts the threshold (`_replace_dead`). Every
        rank sees the same counts (they are all-reduced), so the same n, and takes rank 0's rows."""
        if index.numel() == 0:
            return
        fresh = z[torch.randint(0, z.shape[0], (index.numel(),), device=z.device)].to(self.codebook.dtype)
        broadcast_(fresh)
        threshold = self.cfg.dead_code_threshold
        self.codebook.data[index] = fresh
        self.cluster_size[index] = threshold
        if self.cfg.ema_decay is not None:
            self.embed_avg[index] = fresh * threshold

    @torch.no_grad()
    def permute_codes_(self, order: torch.Tensor) -> None:
        """Renumber the codes: new code i is old code `order[i]` (a permutation of 0..K-1). The stage quantizes
        exactly as before; only the numbers change (export lists codes by falling use)."""
        k = self.cfg.codebook_size
        if order.shape != (k,) or not torch.equal(torch.sort(order).values, torch.arange(k, device=order.device)):
            raise ValueError(f"order must be a permutation of 0..{k - 1}")
        self.codebook.data.copy_(self.codebook.data[order])
        self.cluster_size.copy_(self.cluster_size[order])
        if self.cfg.ema_decay is not None:
            self.embed_avg.copy_(self.embed_avg[order])

    # -- forward -------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, codes: int | None = None) -> torch.Tensor:
        """Rows `[N, dim]` -> codes `[N]` int64; `codes`: search only the first that many codes of the codebook
        (a trimmed stage: its alphabet, and so its bits, shrink; exported models list codes by falling use)."""
        book = self.lookup_codebook()
        return nearest(self._search_key(self._project(x)), book if codes is None else book[:codes])

    def encode_prefixes(self, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Rows `[N, dim]` -> `[len(sizes), N]` int64: `encode(x, k)` for every k in `sizes` at once."""
        return nearest_in_prefixes(self._search_key(self._project(x)), self.lookup_codebook(), sizes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[...]` int64 -> vectors `[..., dim]`."""
        return self._from_lookup(F.embedding(codes, self.value_codebook()))

    def forward(self, x: torch.Tensor) -> StageOutput:
        """Quantize rows `x [N, dim]`; in training mode also update the codebook (after the lookup)."""
        cfg = self.cfg
        z = self._project(x)
        if self.training and not self._init_checked:
            if not bool(self.initted):
                self._kmeans_init(z)
            self._init_checked = True
        with torch.autocast(device_type=z.device.type, enabled=False):
            # float32 at least (bf16 search and rotation are too coarse), float64 kept for exact checks
            z = z.to(torch.promote_types(z.dtype, torch.float32))
            codes = nearest(self._search_key(z.detach()), self.lookup_codebook().to(z.dtype))
            qz = F.embedding(codes, self.value_codebook().to(z.dtype))
            if cfg.estimator == "rotation":
                yz, fallback = rotate_to(z, qz, cfg.rule, self.fused_rotation)
            else:
                yz, fallback = straight_through(z, qz), torch.zeros_like(codes, dtype=torch.bool)
            commit = F.mse_loss(z, qz.detach())
            codebook_loss = F.mse_loss(qz, z.detach()) if cfg.ema_decay is None else z.new_zeros(())
        out = self._from_lookup(yz)
        value = self._from_lookup(qz).detach()
        with torch.no_grad():
            stats = self._stats(x.detach().float(), value.float(), codes, fallback)
        if self.training:
            self._update(z.detach(), codes)
        return StageOutput(out, value, codes, commit, codebook_loss, stats)

    def _stats(
        self, x: torch.Tensor, q: torch.Tensor, codes: torch.Tensor, fallback: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        k = self.cfg.codebook_size
        hist = torch.bincount(codes, minlength=k).float()
        p = hist / hist.sum().clamp_min(1.0)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
        return {
            "usage": (hist > 0).float().mean(),
            "perplexity": entropy.exp(),
            "quant_error": (x - q).pow(2).sum() / x.pow(2).sum().clamp_min(1e-12),
            "rotation_fallback": fallback.sum().float(),
        }

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        self._init_checked = False  # a loaded `initted` must be re-read
        avg, book, size = prefix + "embed_avg", prefix + "codebook", prefix + "cluster_size"
        if self.cfg.ema_decay is not None and avg not in state_dict and book in state_dict and size in state_dict:
            # Inference-only model files omit the EMA sums: rebuild them so codebook = sum / count holds.
            state_dict[avg] = state_dict[book] * state_dict[size].unsqueeze(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


__all__ = ["VQConfig", "VectorQuantizer", "StageOutput", "ESTIMATORS", "is_distributed"]
