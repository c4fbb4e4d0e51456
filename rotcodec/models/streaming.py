"""Streaming building blocks: convolutions that carry their context across chunks.

A `StreamingModule` keeps a per-module state dict while inside `with model.streaming():`. Causal convs keep
the input samples they have not consumed yet (their left context, initially the zero padding a whole-file
pass would add), so encoding a file chunk by chunk yields exactly the frames of the whole-file pass.
Transposed convs keep the tail of their overlap-add, so chunked decoding equals whole decoding up to float
rounding. Chunks of any length are accepted; a layer emits only the frames that are complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .cpu_conv import StrideOneConv, by_product_applies, conv_by_product, train_kernel_applies


class StreamingError(ValueError):
    """Misuse of streaming mode (non-causal layer, nested streaming, batch size changed mid-stream)."""


class StreamingModule(nn.Module):
    """Base class: `with module.streaming():` switches every `StreamingModule` inside `module` into
    streaming mode with fresh state; leaving the block drops the state."""

    def __init__(self) -> None:
        super().__init__()
        self._streaming_state: dict[str, torch.Tensor] = {}
        self._is_streaming = False

    @property
    def is_streaming(self) -> bool:
        return self._is_streaming

    def _streaming_modules(self) -> list[StreamingModule]:
        return [m for m in self.modules() if isinstance(m, StreamingModule)]

    @contextlib.contextmanager
    def streaming(self) -> Iterator[StreamingModule]:
        """Context manager: process consecutive chunks of one stream; state is reset on entry and exit."""
        mods = self._streaming_modules()
        if any(m._is_streaming for m in mods):
            raise StreamingError("already in streaming mode; finish the current stream first")
        for m in mods:
            m._check_streamable()
            m._is_streaming = True
            m._streaming_state = {}
        try:
            yield self
        finally:
            for m in mods:
                m._is_streaming = False
                m._streaming_state = {}

    def reset_streaming(self) -> None:
        """Start a new stream without leaving streaming mode."""
        for m in self._streaming_modules():
            m._streaming_state = {}

    def _check_streamable(self) -> None:
        """Hook: raise `StreamingError` if this module cannot stream."""

    def _state(self, name: str, batch: int) -> torch.Tensor | None:
        value = self._streaming_state.get(name)
        if value is not None and value.shape[0] != batch:
            raise StreamingError(f"batch size changed mid-stream ({value.shape[0]} -> {batch})")
        return value


class StreamingConv1d(StreamingModule):
    """Weight-normed Conv1d with 'same'-style padding: `[batch, in_ch, time] -> [batch, out_ch, ceil(time /
    stride)]`. Causal: all padding on the left, output frame i sees only input samples < (i + 1) * stride.
    Non-causal: the padding is centred (zeros), for offline/music models; it cannot stream."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        causal: bool = True,
        norm: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.causal = causal
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        if self.effective_kernel < stride:
            raise ValueError(f"kernel span {self.effective_kernel} must be >= stride {stride}")
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation)
        self.conv = weight_norm(conv) if norm else conv

    def _check_streamable(self) -> None:
        if not self.causal:
            raise StreamingError("non-causal convolutions cannot stream; build the model with causal=True")

    def _empty(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.conv.out_channels, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.effective_kernel, self.stride
        if self._is_streaming:
            pending = self._state("pending", x.shape[0])
            if pending is None:
                pending = x.new_zeros(x.shape[0], x.shape[1], k - s)
            if pending.shape[-1]:  # nothing pending (a 1x1 conv, or a chunk that ended on a frame): no copy
                x = torch.cat([pending, x], dim=-1)
            n = (x.shape[-1] - k) // s + 1 if x.shape[-1] >= k else 0
            self._streaming_state["pending"] = x[..., n * s :]
            return self._conv(x[..., : (n - 1) * s + k]) if n > 0 else self._empty(x)
        length = x.shape[-1]
        if length == 0:
            return self._empty(x)
        pad_total = k - s
        # Extra right padding completes the last frame, so the output has ceil(length / stride) frames.
        n_frames = -(-length // s)
        extra = (n_frames - 1) * s + k - (length + pad_total)
        if self.causal:
            left, right = pad_total, extra
        else:
            right = pad_total // 2
            left = pad_total - right
            right += extra
        if self.causal and right <= left and not torch.is_grad_enabled() and not self._by_product(x):
            # the conv pads both ends itself (no padded copy of the input); frames past n_frames go
            conv = self.conv
            return F.conv1d(x, conv.weight, conv.bias, s, left, self.dilation)[..., :n_frames]
        return self._conv(F.pad(x, (left, max(right, 0))))

    def _by_product(self, x: torch.Tensor) -> bool:
        """Whether `_conv` runs this layer on x as a matrix product, without autograd (`cpu_conv`)."""
        return not torch.is_grad_enabled() and by_product_applies(x, self.conv.weight, self.stride, self.dilation)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """The conv of an input already padded. On the CPU in float32 some shapes run on `cpu_conv`'s kernels:
        without autograd as matrix products, in training (stride 1) with a faster weight gradient."""
        w = self.conv.weight
        if x.shape[-1] < self.effective_kernel:
            return self.conv(x)
        if self._by_product(x):
            return conv_by_product(x, w, self.conv.bias)
        if torch.is_grad_enabled() and train_kernel_applies(x, w, self.stride):
            return StrideOneConv.apply(x, w, self.conv.bias, self.dilation)
        return self.conv(x)


class StreamingConvTranspose1d(StreamingModule):
    """Weight-normed ConvTranspose1d: `[batch, in_ch, frames] -> [batch, out_ch, frames * stride]`.
    The `kernel - stride` samples of overlap are trimmed on the right (causal) or split (non-causal).
    Streaming keeps the trimmed tail and adds it to the next chunk (overlap-add)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, causal: bool = True) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} must be >= stride {stride}")
        self.kernel_size = kernel_size
        self.stride = stride
        self.causal = causal
        self.convtr = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride))
        # (weight, its version, polyphase taps): reused while the weight is the same tensor (weight norm cached)
        self._taps: tuple[torch.Tensor, int, torch.Tensor] | None = None

    def _check_streamable(self) -> None:
        if not self.causal:
            raise StreamingError("non-causal convolutions cannot stream; build the model with causal=True")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        n_out = x.shape[-1] * s
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.convtr.out_channels, 0)
        if self._is_streaming:
            # Bias is added once per emitted sample, not per overlapping chunk.
            # In place on the fresh output (its backward does not need it): no copy, a view of the first n_out.
            y = self._transposed(x, None)
            tail = self._state("tail", x.shape[0])
            if tail is not None and tail.shape[-1] > 0:
                y[..., : tail.shape[-1]] += tail
            self._streaming_state["tail"] = y[..., n_out:].clone()
            return y[..., :n_out].add_(self.convtr.bias[:, None])
        if self.causal:
            return self._transposed(x, self.convtr.bias, full=False)
        y = self._transposed(x, self.convtr.bias)
        pad_total = k - s
        right = pad_total // 2
        left = pad_total - right
        return y[..., left : left + n_out]

    def _transposed(self, x: torch.Tensor, bias: torch.Tensor | None, full: bool = True) -> torch.Tensor:
        """The transposed conv: `[batch, in_ch, frames]` -> `[batch, out_ch, (frames - 1) * stride + kernel]`,
        or its first `frames * stride` samples when not `full`. Without autograd it runs as one ordinary conv
        over the stride's phases (polyphase), which oneDNN runs faster on one CPU thread (decoding ~4% faster
        in all); with autograd, where that form's backward is slower, as torch's transposed conv."""
        k, s = self.kernel_size, self.stride
        if torch.is_grad_enabled():
            y = F.conv_transpose1d(x, self.convtr.weight, bias, stride=s)
            return y if full else y[..., : x.shape[-1] * s]
        # Output sample n * s + r is the sum over taps j of x[n - j] . w[r + j * s]: a conv of kernel m over
        # the input with out_ch * s channels (one per phase r), then interleaved.
        w = self.convtr.weight
        m = -(-k // s)
        cached = self._taps
        if cached is not None and cached[0] is w and cached[1] == w._version:  # one weight-norm pass per stream
            taps = cached[2]
        else:
            taps = F.pad(w, (0, m * s - k)).view(w.shape[0], w.shape[1], m, s).flip(2)
            taps = taps.permute(3, 1, 0, 2).reshape(-1, w.shape[0], m)
            self._taps = (w, w._version, taps)
        frames = x.shape[-1] + (m - 1 if full else 0)
        # the conv pads both ends itself (no padded copy of the input); the right end's frames go if not full
        phase_bias = None if bias is None else bias.repeat(s)  # channel r * out_ch + c is phase r of channel c
        y = F.conv1d(x, taps, phase_bias, padding=m - 1)
        y = y[..., :frames].unflatten(1, (s, w.shape[1])).permute(0, 2, 3, 1).reshape(x.shape[0], w.shape[1], -1)
        return y[..., : (x.shape[-1] - 1) * s + k] if full else y
