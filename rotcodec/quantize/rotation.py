"""The rotation trick (Fifty et al., ICLR 2025) as a gradient estimator for vector quantization.

For one row: e (encoder output or RVQ residual), q (its code), ê = e/‖e‖, q̂ = q/‖q‖, λ = ‖q‖/‖e‖ and
r = (ê + q̂)/‖ê + q̂‖. The rotation R = I − 2 r rᵀ + 2 q̂ êᵀ takes ê to q̂. The forward value is q; the
gradient reaching e is λ Rᵀ g instead of STE's g. R is applied in its O(d) form
R e = e − 2 (e·r) r + 2 (e·ê) q̂ with r, ê, q̂, λ held constant, so no d×d matrix is ever built.

Degenerate rows get a deliberate rule (see `RotationRule`): when ‖e‖ or ‖q‖ is tiny, when e and q are
(near-)antiparallel (r undefined), or when λ is extreme (λ amplifies the gradient), the row falls back to
the straight-through estimator. The forward value stays exactly q in every case, and the number of rows
that fell back is returned so training logs can show how often it happens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RotationRule:
    """Thresholds of the fallback-to-STE rule.

    norm_eps: rows with ‖e‖ or ‖q‖ below this (absolute) fall back; λ would explode or be meaningless.
    antiparallel_eps: rows with 1 + cos(e, q) below this fall back; ‖ê + q̂‖ → 0 makes r undefined.
    max_scale: rows with λ above this or below 1/max_scale fall back; such a code is far from its input and
        a λ-scaled gradient would be amplified or crushed by orders of magnitude.
    """

    norm_eps: float = 1e-6
    antiparallel_eps: float = 1e-4
    max_scale: float = 100.0


DEFAULT_RULE = RotationRule()


def _constants(
    e: torch.Tensor, q: torch.Tensor, norm_eps: float, antiparallel_eps: float, max_scale: float
) -> tuple[torch.Tensor, ...]:
    """Per-row constants of the backward `[..., 1]`: keep (the rotation applies), λ, 1/‖e‖, 1/‖q‖, 1/(1 + c).
    Fallback rows get λ = 1 and zeros, so their backward is exactly g (no rotation terms)."""
    e_norm = e.norm(dim=-1, keepdim=True)
    q_norm = q.norm(dim=-1, keepdim=True)
    cos = (e * q).sum(-1, keepdim=True) / (e_norm * q_norm)
    lam = q_norm / e_norm
    # NaN/inf fail every comparison below, so non-finite rows fall back too.
    keep = (
        (e_norm > norm_eps)
        & (q_norm > norm_eps)
        & (cos > antiparallel_eps - 1.0)
        & (lam < max_scale)
        & (lam > 1.0 / max_scale)
    )
    zero = torch.zeros_like(lam)
    scale = torch.where(keep, lam, torch.ones_like(lam))
    inv_e = torch.where(keep, 1.0 / e_norm, zero)
    inv_q = torch.where(keep, 1.0 / q_norm, zero)
    inv_1pc = torch.where(keep, 1.0 / (1.0 + cos), zero)
    return keep, scale, inv_e, inv_q, inv_1pc


def _rotated_grad(
    g: torch.Tensor,
    e: torch.Tensor,
    q: torch.Tensor,
    keep: torch.Tensor,
    scale: torch.Tensor,
    inv_e: torch.Tensor,
    inv_q: torch.Tensor,
    inv_1pc: torch.Tensor,
) -> torch.Tensor:
    """λ Rᵀ g per row from `_constants` (see `_RotateTo`)."""
    zero = torch.zeros_like(scale)
    # where, not multiply: on fallback rows g·e may be inf, and inf · 0 would be NaN.
    a = torch.where(keep, (g * e).sum(-1, keepdim=True) * inv_e, zero)
    b = torch.where(keep, (g * q).sum(-1, keepdim=True) * inv_q, zero)
    t = (a + b) * inv_1pc
    alpha = (2.0 * b - t) * inv_e * scale
    beta = -t * inv_q * scale
    return torch.addcmul(torch.addcmul(g * scale, alpha, e), beta, q)


_COMPILED: dict[str, Callable[..., object]] = {}


def _kernel(name: str, fused: bool) -> Callable[..., object]:
    """`_constants` or `_rotated_grad`, as is or compiled by torch.compile into one fused kernel (per device
    and dtype; compiled on first use, then cached)."""
    fn = {"constants": _constants, "grad": _rotated_grad}[name]
    if not fused:
        return fn
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, fullgraph=True, dynamic=None)
    return _COMPILED[name]


class _RotateTo(torch.autograd.Function):
    """Forward: q. Backward: λ Rᵀ g per row, via the closed form below (or g on fallback rows).

    With a = g·ê, b = g·q̂, c = ê·q̂ and r = (ê + q̂)/√(2 + 2c):
    Rᵀ g = g − 2 (g·r) r + 2 (g·q̂) ê = g + (2b − (a + b)/(1 + c)) ê − ((a + b)/(1 + c)) q̂.
    So the backward is two row reductions and three scaled adds: no d×d matrix, no stored r, ê or q̂.
    `fused`: each direction runs as one compiled kernel instead of about 25 element-wise ops.
    """

    @staticmethod
    def forward(ctx, e: torch.Tensor, q: torch.Tensor, rule: RotationRule, fused: bool):  # noqa: ANN001, ANN205
        with torch.no_grad():
            consts = _kernel("constants", fused)(e, q, rule.norm_eps, rule.antiparallel_eps, rule.max_scale)
        ctx.fused = fused
        ctx.save_for_backward(e, q, *consts)
        fallback = ~consts[0]
        ctx.mark_non_differentiable(fallback)
        return q.clone(), fallback

    @staticmethod
    def backward(ctx, g: torch.Tensor, _unused: torch.Tensor):  # noqa: ANN001, ANN205
        return _kernel("grad", ctx.fused)(g, *ctx.saved_tensors), None, None, None


def rotate_to(
    e: torch.Tensor, q: torch.Tensor, rule: RotationRule = DEFAULT_RULE, fused: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation-trick quantized output.

    Args:
        e: `[..., d]` inputs; gradients flow to it.
        q: `[..., d]` codes for those inputs (same shape); receives no gradient through this path.
        rule: thresholds of the fallback rule.
        fused: compute each direction as one kernel compiled by torch.compile (the same formulas; results
            agree to float rounding, as fused reductions sum in another order). For GPU training, where
            the eager path's ~50 small ops per stage make a step launch-bound.

    Returns:
        (out, fallback): `out` equals `q` exactly in the forward pass and has d out/d e = λ Rᵀ (per row);
        `fallback` is a bool tensor `[...]` marking rows that used the STE fallback.

    Computed in float32 (float64 inputs: float64) even under autocast, since bf16 errors reach 3e-2 at
    benign angles; the result has the promoted dtype of `e` and `q`.
    """
    if e.shape != q.shape:
        raise ValueError(f"rotate_to: e {tuple(e.shape)} and q {tuple(q.shape)} differ in shape")
    out_dtype = torch.promote_types(e.dtype, q.dtype)
    work = torch.promote_types(out_dtype, torch.float32)  # float32 at least, float64 kept
    with torch.autocast(device_type=e.device.type, enabled=False):
        out, fallback = _RotateTo.apply(e.to(work), q.detach().to(work), rule, fused)
    return out.to(out_dtype), fallback.squeeze(-1)


def straight_through(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """STE: forward value exactly q, gradient to e the identity, no gradient to q. Shapes `[..., d]`."""
    out_dtype = torch.promote_types(e.dtype, q.dtype)
    work = torch.promote_types(out_dtype, torch.float32)
    e32 = e.to(work)
    return (q.detach().to(work) + (e32 - e32.detach())).to(out_dtype)
