"""rotate_to: forward value, gradient against a dense float64 reference, geometry, degenerate inputs."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.quantize import RotationRule, rotate_to, straight_through


def dense_reference(e: torch.Tensor, q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """λ Rᵀ g per row, from the full d×d matrix R = I − 2 r rᵀ + 2 q̂ êᵀ, in float64."""
    e, q, g = e.double(), q.double(), g.double()
    out = []
    for ei, qi, gi in zip(e, q, g, strict=True):
        eh, qh = ei / ei.norm(), qi / qi.norm()
        r = (eh + qh) / (eh + qh).norm()
        R = torch.eye(len(ei), dtype=torch.float64) - 2 * torch.outer(r, r) + 2 * torch.outer(qh, eh)
        out.append(qi.norm() / ei.norm() * R.T @ gi)
    return torch.stack(out)


@pytest.mark.parametrize("d", [2, 3, 8, 64, 512])
def test_forward_is_q_and_gradient_matches_dense_reference(d: int) -> None:
    gen = torch.Generator().manual_seed(d)
    e = torch.randn(6, d, generator=gen, requires_grad=True)
    q = torch.randn(6, d, generator=gen, requires_grad=True)
    out, fallback = rotate_to(e, q)
    assert torch.equal(out, q.detach())
    assert not fallback.any()
    g = torch.randn(6, d, generator=gen)
    out.backward(g)
    ref = dense_reference(e.detach(), q.detach(), g)
    torch.testing.assert_close(e.grad.double(), ref, rtol=1e-4, atol=1e-5)
    assert q.grad is None  # no gradient to q through this path


def test_float64_inputs_stay_float64_and_exact() -> None:
    e = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    q = torch.randn(4, 16, dtype=torch.float64)
    out, _ = rotate_to(e, q)
    assert out.dtype == torch.float64 and torch.equal(out, q)
    g = torch.randn(4, 16, dtype=torch.float64)
    out.backward(g)
    torch.testing.assert_close(e.grad, dense_reference(e.detach(), q, g), rtol=1e-10, atol=1e-12)


def _jacobian_row(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(lambda v: rotate_to(v, q)[0], e)


@pytest.mark.parametrize("d", [2, 5, 32])
def test_jacobian_is_scaled_rotation_taking_e_hat_to_q_hat(d: int) -> None:
    gen = torch.Generator().manual_seed(100 + d)
    e = torch.randn(d, dtype=torch.float64, generator=gen)
    q = torch.randn(d, dtype=torch.float64, generator=gen)
    lam = q.norm() / e.norm()
    R = _jacobian_row(e, q) / lam  # d out / d e = λ R
    torch.testing.assert_close(R @ R.T, torch.eye(d, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.det(R), torch.tensor(1.0, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(R @ (e / e.norm()), q / q.norm(), atol=1e-10, rtol=0)


unit = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(2, 24),
    seed=st.integers(0, 2**31 - 1),
    scale_e=st.floats(0.05, 20),
    scale_q=st.floats(0.05, 20),
)
def test_angle_between_gradient_and_q_carries_to_e(d: int, seed: int, scale_e: float, scale_q: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    e = (torch.randn(1, d, generator=gen, dtype=torch.float64) * scale_e).requires_grad_(True)
    q = torch.randn(1, d, generator=gen, dtype=torch.float64) * scale_q
    g = torch.randn(1, d, generator=gen, dtype=torch.float64)
    out, fallback = rotate_to(e, q)
    if fallback.any():  # antiparallel or extreme λ: STE rule, covered elsewhere
        return
    out.backward(g)
    cos_gq = torch.nn.functional.cosine_similarity(g, q).item()
    cos_grad_e = torch.nn.functional.cosine_similarity(e.grad, e.detach()).item()
    assert math.isclose(cos_gq, cos_grad_e, abs_tol=1e-9)
    # the norm scales by λ = ‖q‖/‖e‖
    assert math.isclose(e.grad.norm().item(), (q.norm() / e.detach().norm() * g.norm()).item(), rel_tol=1e-9)


@pytest.mark.parametrize(
    "case",
    ["e_zero", "q_zero", "antiparallel", "near_antiparallel", "huge", "tiny", "tiny_e_normal_q", "both_zero"],
)
def test_degenerate_rows_stay_finite_and_exact(case: str) -> None:
    torch.manual_seed(0)
    d = 16
    base = torch.randn(3, d)
    e, q = base.clone(), torch.randn(3, d)
    if case == "e_zero":
        e[1] = 0
    elif case == "q_zero":
        q[1] = 0
    elif case == "antiparallel":
        q[1] = -2.0 * e[1]
    elif case == "near_antiparallel":
        q[1] = -e[1] + 1e-7 * torch.randn(d)
    elif case == "huge":
        e[1] *= 1e30
        q[1] *= 1e30
    elif case == "tiny":
        e[1] *= 1e-30
        q[1] *= 1e-30
    elif case == "tiny_e_normal_q":
        e[1] *= 1e-9
    elif case == "both_zero":
        e[1] = 0
        q[1] = 0
    e.requires_grad_(True)
    out, fallback = rotate_to(e, q)
    assert torch.equal(out, q)
    assert bool(fallback[1]) or case == "huge"
    g = torch.randn(3, d)
    out.backward(g)
    assert torch.isfinite(e.grad).all()
    if fallback[1]:  # the rule: STE for that row
        assert torch.equal(e.grad[1], g[1])
    assert not fallback[0] and not fallback[2]  # untouched rows keep the rotation


def test_extreme_scale_falls_back_under_custom_rule() -> None:
    e = torch.randn(2, 8, requires_grad=True)
    q = e.detach() * 50.0
    _, fb_default = rotate_to(e, q)
    _, fb_strict = rotate_to(e, q, RotationRule(max_scale=10.0))
    assert not fb_default.any() and fb_strict.all()


def test_bf16_autocast_computes_in_float32() -> None:
    torch.manual_seed(1)
    e = torch.randn(64, 32, requires_grad=True)
    q = torch.randn(64, 32)
    q[3] = -e[3].detach()  # antiparallel row under autocast
    g = torch.randn(64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, fb = rotate_to(e.bfloat16(), q.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.equal(out, q.bfloat16())
    out.float().backward(g)
    assert torch.isfinite(e.grad).all() and bool(fb[3])
    ref = dense_reference(e.detach().bfloat16().float(), q.bfloat16().float(), g.bfloat16().float())
    ok = ~fb
    # gradient returned in bf16 (its dtype), but the rotation itself was done in fp32
    torch.testing.assert_close(e.grad[ok].double(), ref[ok], rtol=2e-2, atol=2e-2)


def test_straight_through_identity_gradient() -> None:
    e = torch.randn(5, 7, requires_grad=True)
    q = torch.randn(5, 7, requires_grad=True)
    out = straight_through(e, q)
    assert torch.equal(out, q.detach())
    g = torch.randn(5, 7)
    out.backward(g)
    assert torch.equal(e.grad, g) and q.grad is None


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        rotate_to(torch.randn(2, 3), torch.randn(2, 4))


def test_fused_rotation_matches_the_eager_one_on_ordinary_and_degenerate_rows() -> None:
    """train.compile's path: the same forward value and fallback rows, the gradient to float rounding."""
    gen = torch.Generator().manual_seed(7)
    e = torch.randn(64, 16, generator=gen)
    q = torch.randn(64, 16, generator=gen)
    e[0] = 0.0  # tiny input
    q[1] = -e[1]  # antiparallel
    q[2] = 1e3 * e[2]  # lambda beyond max_scale
    e[3, 0] = float("inf")  # non-finite
    g = torch.randn(64, 16, generator=gen)
    results = []
    for fused in (False, True):
        x = e.clone().requires_grad_()
        out, fallback = rotate_to(x, q, fused=fused)
        out.backward(g)
        results.append((out.detach(), fallback, x.grad))
    (out0, fb0, g0), (out1, fb1, g1) = results
    assert torch.equal(out1, q) and torch.equal(out0, out1)
    assert torch.equal(fb0, fb1) and fb1[:4].all() and not fb1[4:].any()
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6, equal_nan=True)  # the inf entry is NaN in both
    torch.testing.assert_close(g1[4:].double(), dense_reference(e[4:], q[4:], g[4:]), rtol=1e-4, atol=1e-5)
