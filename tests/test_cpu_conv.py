"""The CPU training kernel for stride-1 convolutions (`cpu_conv.StrideOneConv`) gives torch's outputs and
gradients, and the SEANet layers that train on it take it exactly where it applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.models import cpu_conv
from rotcodec.models.cpu_conv import StrideOneConv
from rotcodec.models.streaming import StreamingConv1d

pytestmark = pytest.mark.usefixtures("one_thread")


def _grads(conv, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, seed: int) -> list[torch.Tensor]:  # noqa: ANN001
    y = conv(x, w, b)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return [y, *torch.autograd.grad(y, (x, w, b), g)]


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    c_in=st.integers(1, 9),
    c_out=st.integers(1, 9),
    kernel=st.integers(1, 7),
    dilation=st.sampled_from([1, 2, 3]),
    frames=st.integers(1, 90),
)
def test_outputs_and_gradients_match_torchs_conv(
    batch: int, c_in: int, c_out: int, kernel: int, dilation: int, frames: int
) -> None:
    gen = torch.Generator().manual_seed(batch * 1000 + c_in * 100 + c_out * 10 + kernel)
    x = torch.randn(batch, c_in, frames + (kernel - 1) * dilation, generator=gen, requires_grad=True)
    w = torch.randn(c_out, c_in, kernel, generator=gen, requires_grad=True)
    b = torch.randn(c_out, generator=gen, requires_grad=True)
    ours = _grads(lambda *a: StrideOneConv.apply(*a, dilation), x, w, b, seed=frames)
    torchs = _grads(lambda *a: F.conv1d(*a, dilation=dilation), x, w, b, seed=frames)
    for name, a, ref in zip(("output", "input grad", "weight grad", "bias grad"), ours, torchs, strict=True):
        assert a.shape == ref.shape, name
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-4, msg=name)


def test_frozen_weights_and_inputs_get_no_gradient() -> None:
    x = torch.randn(2, 4, 50)
    w = torch.randn(3, 4, 3, requires_grad=True)
    y = StrideOneConv.apply(x, w, None, 2)
    (gw,) = torch.autograd.grad(y.square().sum(), (w,))
    ref = torch.autograd.grad(F.conv1d(x, w, dilation=2).square().sum(), (w,))[0]
    torch.testing.assert_close(gw, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "dilation"),
    [(8, 16, 1, 1, 1), (16, 8, 3, 1, 3), (16, 1, 7, 1, 1), (8, 16, 4, 2, 1)],
)
def test_streaming_convs_train_on_the_kernel_where_it_applies(
    monkeypatch: pytest.MonkeyPatch, c_in: int, c_out: int, kernel: int, stride: int, dilation: int
) -> None:
    calls = []
    real = StrideOneConv.apply
    monkeypatch.setattr(cpu_conv.StrideOneConv, "apply", lambda *a: calls.append(a) or real(*a))
    torch.manual_seed(kernel)
    conv = StreamingConv1d(c_in, c_out, kernel, stride=stride, dilation=dilation)
    x = torch.randn(2, c_in, 400, requires_grad=True)
    y = conv(x)
    assert len(calls) == (stride == 1)
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, (x, conv.conv.parametrizations.weight.original1), g)
    # the same layer through nn.Conv1d's forward: torch's kernels
    pad = (kernel - 1) * dilation + 1 - stride
    extra = (y.shape[-1] - 1) * stride + (kernel - 1) * dilation + 1 - (400 + pad)
    ref_y = conv.conv(F.pad(x, (pad, extra)))
    torch.testing.assert_close(y, ref_y)
    ref = torch.autograd.grad(ref_y, (x, conv.conv.parametrizations.weight.original1), g)
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # inference does not take it
        conv(x)
    assert len(calls) == (stride == 1)
