"""CPU kernels for SEANet's convolutions where oneDNN is slow at its shapes (few channels, long signals).

Inference (no autograd): a conv with one input channel, at most two output channels or a 1x1 kernel runs as
one matrix product (`conv_by_product`); oneDNN ran those shapes several times slower.

Training: a stride-1 conv's weight gradient is one batched matrix product per tap and its bias gradient a sum
(`StrideOneConv`); oneDNN's, for SEANet's layers at 8-64 channels and 2,000-16,000 samples, were slower, the
dilated convs' and every bias gradient most (`benchmarks/cpu_conv_speed.py`).
Both compute the same sums as torch's kernels, in another order (float32 rounding differs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def by_product_applies(x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int) -> bool:
    """Whether `conv_by_product` runs this conv: CPU, float32, stride and dilation 1, and one input channel,
    at most two output channels or a 1x1 kernel."""
    c_out, c_in, k = weight.shape
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and stride == 1
        and dilation == 1
        and x.shape[-1] >= k
        and (c_in == 1 or c_out <= 2 or k == 1)
    )


def conv_by_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.conv1d(x, weight, bias)` (stride 1, no padding) as matrix products: x `[batch, in, time]`, weight
    `[out, in, k]` -> `[batch, out, time - k + 1]`. For the shapes `by_product_applies` accepts."""
    c_out, c_in, k = weight.shape
    n = x.shape[-1] - k + 1
    if k == 1:  # oneDNN takes its slow path for 1x1 convs
        y = torch.matmul(weight[:, :, 0], x)
    elif c_in == 1:  # [out, k] x the input's k-sample windows [batch, k, n]
        y = torch.matmul(weight[:, 0], x[:, 0].unfold(-1, k, 1).transpose(1, 2))
    else:  # every tap's product at once, [batch, k, out, time], then each tap shifted into place
        taps = torch.matmul(weight.permute(2, 0, 1).reshape(k * c_out, c_in), x).view(x.shape[0], k, c_out, -1)
        y = taps[:, 0, :, :n].clone()
        for j in range(1, k):
            y += taps[:, j, :, j : j + n]
    return y if bias is None else y.add_(bias[:, None])


def stride_one_weight_grad(grad: torch.Tensor, x: torch.Tensor, k: int, dilation: int) -> torch.Tensor:
    """The weight gradient of a stride-1 conv: grad `[batch, out, n]`, x `[batch, in, n + (k - 1) * dilation]`
    -> `[out, in, k]`, tap j being the sum over the batch of grad @ (x shifted by j * dilation)^T."""
    n = grad.shape[-1]
    per_example = grad.new_empty(k, grad.shape[0], grad.shape[1], x.shape[1])
    for j in range(k):
        torch.bmm(grad, x[:, :, j * dilation : j * dilation + n].transpose(1, 2), out=per_example[j])
    return per_example.sum(1).permute(1, 2, 0)


def stride_one_input_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """The input gradient of a stride-1 conv: grad `[batch, out, n]` -> `[batch, in, x.shape[-1]]`. With at
    most two output channels (and dilation 1), through each output channel's k-sample windows of the
    zero-padded grad; otherwise torch's kernel."""
    c_out, _, k = weight.shape
    if dilation != 1 or c_out > 2:
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1], [0], [dilation], False, [0], 1, [True, False, False]
        )[0]
    padded = F.pad(grad, (k - 1, k - 1))
    out = None
    for o in range(c_out):
        windows = padded[:, o].unfold(-1, k, 1)[:, : x.shape[-1]].transpose(1, 2)  # [batch, k, length]
        part = torch.matmul(weight[o].flip(-1), windows)
        out = part if out is None else out.add_(part)
    return out


class StrideOneConv(torch.autograd.Function):
    """`F.conv1d(x, weight, bias, stride=1, padding=0, dilation=dilation)` for CPU float32 training: forward
    by oneDNN (or `conv_by_product` where that is faster); backward by `stride_one_input_grad`,
    `stride_one_weight_grad` and a sum over batch and time for the bias (torch's kernel, asked for the bias
    gradient, took as long as for the weight's and the bias's together: `benchmarks/cpu_conv_speed.py`)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        dilation: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        ctx.has_bias = bias is not None
        if by_product_applies(x, weight, 1, dilation) and weight.shape[0] <= 2:
            return conv_by_product(x, weight, bias)
        return F.conv1d(x, weight, bias, dilation=dilation)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # noqa: ANN205
        x, weight = ctx.saved_tensors
        d = ctx.dilation
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = stride_one_input_grad(grad, x, weight, d)
        if ctx.needs_input_grad[1]:
            grad_w = stride_one_weight_grad(grad, x, weight.shape[-1], d)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2))
        return grad_x, grad_w, grad_b, None


def train_kernel_applies(x: torch.Tensor, weight: torch.Tensor, stride: int) -> bool:
    """Whether a conv under autograd runs as `StrideOneConv`: CPU, float32 (bf16 autocast keeps torch's
    kernels), stride 1. The caller checks that the input spans the kernel."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and stride == 1
        and not _cpu_autocast()
    )


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()
