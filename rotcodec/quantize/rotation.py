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


def rotate_to(
    e: torch.Tensor, q: torch.Tensor, rule: RotationRule = DEFAULT_RULE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation-trick quantized output.

    Args:
        e: `[..., d]` inputs; gradients flow to it.
        q: `[..., d]` codes for those inputs (same shape); receives no gradient through this path.
        rule: thresholds of the fallback rule.

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
        e32 = e.to(work)
        q32 = q.detach().to(work)
        with torch.no_grad():
            e_norm = e32.norm(dim=-1, keepdim=True)
            q_norm = q32.norm(dim=-1, keepdim=True)
            e_hat = e32 / e_norm.clamp_min(rule.norm_eps)
            q_hat = q32 / q_norm.clamp_min(rule.norm_eps)
            s = e_hat + q_hat
            s_norm = s.norm(dim=-1, keepdim=True)
            r = s / s_norm.clamp_min(rule.norm_eps)
            lam = q_norm / e_norm.clamp_min(rule.norm_eps)
            cos = (e_hat * q_hat).sum(-1, keepdim=True)
            fallback = (
                ~torch.isfinite(e_norm)
                | ~torch.isfinite(q_norm)
                | (e_norm < rule.norm_eps)
                | (q_norm < rule.norm_eps)
                | (1.0 + cos < rule.antiparallel_eps)
                | (lam > rule.max_scale)
                | (lam < 1.0 / rule.max_scale)
            )
            # Finite constants on fallback rows, so no NaN can leak into the gradient via 0 * inf.
            inv_e_norm = torch.where(fallback, torch.ones_like(e_norm), 1.0 / e_norm.clamp_min(rule.norm_eps))
            q_norm = torch.where(fallback, torch.ones_like(q_norm), q_norm)
        # λ R e written as ‖q‖ · R (e/‖e‖) with only the bare e carrying gradient: same gradient, no overflow
        # of ‖q‖·‖e‖-sized intermediates.
        e_unit = e32 * inv_e_norm
        rotated = q_norm * (
            e_unit
            - 2.0 * (e_unit * r).sum(-1, keepdim=True) * r
            + 2.0 * (e_unit * e_hat).sum(-1, keepdim=True) * q_hat
        )
        y = torch.where(fallback, e32, rotated)
        # q + (y − sg(y)): forward value exactly q (y − y is exactly 0), gradient that of y.
        out = q32 + (y - y.detach())
    return out.to(out_dtype), fallback.squeeze(-1)


def straight_through(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """STE: forward value exactly q, gradient to e the identity, no gradient to q. Shapes `[..., d]`."""
    out_dtype = torch.promote_types(e.dtype, q.dtype)
    work = torch.promote_types(out_dtype, torch.float32)
    e32 = e.to(work)
    return (q.detach().to(work) + (e32 - e32.detach())).to(out_dtype)
