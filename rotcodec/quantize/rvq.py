"""Residual vector quantization with a per-stage gradient estimator (rotation trick by default).

Wiring of the residual between stages (REFERENCE: why it matters):
- "detached": stage k+1 quantizes r_k − sg(q_k), so every stage sees its input as its own encoder output and
  ∂L/∂x = Σ_k λ_k R_kᵀ g (with STE: n_q · g).
- "chained" (EnCodec-style): stage k+1 quantizes r_k − y_k, y_k the estimator output; the Jacobian
  telescopes to I − Π_k (I − λ_k R_k), nearly STE (with STE: exactly the identity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .vq import StageOutput, VectorQuantizer, VQConfig

WIRINGS = ("detached", "chained")


@dataclass
class RVQConfig(VQConfig):
    """VQConfig for every stage, plus: n_q stages; wiring "detached" or "chained"; quantizer_dropout: the
    probability that a training example uses a random number of stages in [1, n_q] (SoundStream)."""

    n_q: int = 8
    wiring: str = "detached"
    quantizer_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.wiring not in WIRINGS:
            raise ValueError(f"wiring must be one of {WIRINGS}, got {self.wiring!r}")
        if self.n_q < 1:
            raise ValueError(f"n_q must be >= 1, got {self.n_q}")
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {self.quantizer_dropout}")

    def stage(self) -> VQConfig:
        fields = {f: getattr(self, f) for f in VQConfig.__dataclass_fields__}
        return VQConfig(**fields)


@dataclass
class RVQOutput:
    """quantized `[batch, dim, time]` (value = sum of the used stages' codes), codes `[batch, n_q, time]`,
    loss: weighted commitment + codebook loss (scalar), stats: per-stage and total statistics (tensors, so
    reading them is the caller's choice of host sync), n_q_per_example `[batch]` after dropout."""

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    stats: dict[str, torch.Tensor]
    n_q_per_example: torch.Tensor


class ResidualVQ(nn.Module):
    """`n_q` VQ stages over `[batch, dim, time]` inputs."""

    def __init__(
        self, dim: int = 128, n_q: int = 8, codebook_size: int = 1024, estimator: str = "rotation", **kwargs
    ) -> None:  # noqa: ANN003
        super().__init__()
        self.config = RVQConfig(dim=dim, n_q=n_q, codebook_size=codebook_size, estimator=estimator, **kwargs)
        stage = self.config.stage()
        self.stages = nn.ModuleList(VectorQuantizer(stage) for _ in range(n_q))

    @classmethod
    def from_config(cls, cfg: RVQConfig) -> ResidualVQ:
        kw = {f: getattr(cfg, f) for f in RVQConfig.__dataclass_fields__}
        return cls(**kw)

    @property
    def n_q(self) -> int:
        return self.config.n_q

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def bits_per_code(self) -> int:
        """Bits each code takes when packed: ⌈log2 K⌉."""
        return max(1, math.ceil(math.log2(self.codebook_size)))

    def bits_per_frame(self, n_q: int | None = None) -> int:
        return (n_q or self.n_q) * self.bits_per_code

    def _check_n_q(self, n_q: int | None) -> int:
        n_q = self.n_q if n_q is None else int(n_q)
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be in [1, {self.n_q}], got {n_q}")
        return n_q

    def _dropout_counts(self, batch: int, n_q: int, device: torch.device) -> torch.Tensor:
        counts = torch.full((batch,), n_q, device=device, dtype=torch.long)
        p = self.config.quantizer_dropout
        if self.training and p > 0:
            random_n = torch.randint(1, n_q + 1, (batch,), device=device)
            use = torch.rand(batch, device=device) < p
            counts = torch.where(use, random_n, counts)
        return counts

    def forward(self, x: torch.Tensor, n_q: int | None = None) -> RVQOutput:
        """Training/eval forward. x `[batch, dim, time]`; uses the first `n_q` stages (default all)."""
        n_q = self._check_n_q(n_q)
        b, _, t = x.shape
        rows = rearrange(x, "b d t -> (b t) d")
        per_example = self._dropout_counts(b, n_q, x.device)
        active = torch.arange(n_q, device=x.device).unsqueeze(0) < per_example.unsqueeze(1)  # [b, n_q]
        active_rows = active.repeat_interleave(t, dim=0).to(rows.dtype)  # [(b t), n_q]

        residual = rows
        quantized = torch.zeros_like(rows)
        loss = rows.new_zeros((), dtype=torch.float32)
        codes, stats = [], {}
        for k, stage in enumerate(self.stages[:n_q]):
            res: StageOutput = stage(residual)
            m = active_rows[:, k : k + 1]
            quantized = quantized + res.out * m
            # Dropped stages contribute neither output nor loss; their rows still feed the EMA statistics.
            frac = m.mean().clamp_min(1e-8)
            stage_loss = self.config.commitment_weight * res.commit_loss
            if self.config.ema_decay is None:
                stage_loss = stage_loss + self.config.codebook_weight * res.codebook_loss
            loss = loss + stage_loss * frac
            if self.config.wiring == "detached":
                residual = residual - res.value
            else:
                residual = residual - res.out
            codes.append(res.codes)
            for name, value in res.stats.items():
                stats[f"vq{k}/{name}"] = value
        for name in ("usage", "perplexity", "quant_error"):
            stats[f"vq/{name}_mean"] = torch.stack([stats[f"vq{k}/{name}"] for k in range(n_q)]).mean()
        stats["vq/rotation_fallback"] = torch.stack([stats[f"vq{k}/rotation_fallback"] for k in range(n_q)]).sum()
        stats["vq/quant_error_total"] = (rows.detach() - quantized.detach()).pow(2).sum() / rows.detach().pow(
            2
        ).sum().clamp_min(1e-12)
        code_t = rearrange(torch.stack(codes, dim=-1), "(b t) q -> b q t", b=b)
        return RVQOutput(rearrange(quantized, "(b t) d -> b d t", b=b), code_t, loss, stats, per_example)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_q: int | None = None, last_codes: int | None = None) -> torch.Tensor:
        """x `[batch, dim, time]` -> codes `[batch, n_q, time]` int64. `last_codes`: the last stage picks among
        its first that many codes only (a trimmed stage, `VectorQuantizer.encode`)."""
        n_q = self._check_n_q(n_q)
        if last_codes is not None and not 2 <= last_codes <= self.stages[n_q - 1].cfg.codebook_size:
            raise ValueError(f"last_codes must be in 2..{self.stages[n_q - 1].cfg.codebook_size}, got {last_codes}")
        b = x.shape[0]
        residual = rearrange(x, "b d t -> (b t) d")
        codes = []
        for k, stage in enumerate(self.stages[:n_q]):
            c = stage.encode(residual, last_codes if k == n_q - 1 else None)
            residual = residual - stage.decode(c)
            codes.append(c)
        return rearrange(torch.stack(codes, dim=-1), "(b t) q -> b q t", b=b)

    @torch.no_grad()
    def encode_trimmed(self, x: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """x `[batch, dim, time]` -> (codes `[batch, stages, len(sizes), time]` int64, gain `[stages, len(sizes)]`):
        for each stage s and k in `sizes`, the code stage s sends when it is the last, trimmed to its first k
        codes (the stages before it whole), and how much that trimmed stage lowers the squared latent error
        summed over all frames (negative: it moves the latent away, as a few codes far from a small residual
        do). What a trimmed stage would cost and buy, measured without encoding once per size."""
        b = x.shape[0]
        residual = rearrange(x, "b d t -> (b t) d")
        out, gains = [], []
        for stage in self.stages:
            codes = stage.encode_prefixes(residual, sizes)  # [sizes, rows]
            # |r|^2 - |r - q|^2 = 2 r.q - |q|^2 for every row and code at once, then each size's picks summed
            table = stage.decode(torch.arange(stage.cfg.codebook_size, device=residual.device))  # [codes, dim]
            gain = 2 * residual @ table.t() - table.pow(2).sum(-1)  # [rows, codes]
            gains.append(gain.gather(1, codes.t()).sum(0))
            out.append(codes)
            residual = residual - stage.decode(stage.encode(residual))
        return rearrange(torch.stack(out), "q s (b t) -> b q s t", b=b), torch.stack(gains)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes `[batch, n_q, time]` (n_q ≤ stages) -> `[batch, dim, time]`."""
        n_q = self._check_n_q(codes.shape[1])
        out = None
        for k, stage in enumerate(self.stages[:n_q]):
            v = stage.decode(codes[:, k])  # [b, t, d]
            out = v if out is None else out + v
        return rearrange(out, "b t d -> b d t")
