"""SEANet encoder/decoder (SoundStream/EnCodec family): 1-D convs, dilated residual units, ELU or Snake
activations (`activations.py`), weight norm, strided down/up-sampling. Channels double at every downsampling
stage (capped at `max_channels`).

Encoder: `[batch, channels, time] -> [batch, latent_dim, time / hop]`, hop = prod(strides).
Decoder: `[batch, latent_dim, frames] -> [batch, channels, frames * hop]`.
Both are causal by default (streamable); `causal=False` centres the padding (offline/music models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .activations import make_activation
from .streaming import StreamingConv1d, StreamingConvTranspose1d, StreamingModule


def _stage_channels(base: int, n_stages: int, max_channels: int) -> list[int]:
    """Channels before each stage and after the last: base, 2*base, ... capped."""
    return [min(base * 2**i, max_channels) for i in range(n_stages + 1)]


class ResidualUnit(StreamingModule):
    """x + conv1x1(act(conv_k,dilated(act(x)))): `[batch, dim, time] -> [batch, dim, time]`.
    The hidden width is `dim // compress` (EnCodec-style bottleneck); the skip is the identity."""

    def __init__(
        self, dim: int, kernel_size: int, dilation: int, causal: bool, compress: int = 2, activation: str = "elu"
    ) -> None:
        super().__init__()
        hidden = max(1, dim // compress)
        self.block = nn.Sequential(
            make_activation(activation, dim),
            StreamingConv1d(dim, hidden, kernel_size, dilation=dilation, causal=causal),
            # in place: its input is a fresh conv output, which saves a copy
            make_activation(activation, hidden, inplace=True),
            StreamingConv1d(hidden, dim, 1, causal=causal),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _residual_units(
    dim: int, kernel_size: int, dilations: Sequence[int], causal: bool, compress: int, activation: str
) -> list[nn.Module]:
    return [ResidualUnit(dim, kernel_size, d, causal, compress, activation) for d in dilations]


class SEANetEncoder(StreamingModule):
    """Waveform -> latent frames. `strides` in encoder order (e.g. [2, 4, 5, 8] -> hop 320)."""

    def __init__(
        self,
        channels: int = 1,
        latent_dim: int = 128,
        base_channels: int = 32,
        strides: Sequence[int] = (2, 4, 5, 8),
        dilations: Sequence[int] = (1, 3, 9),
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        compress: int = 2,
        max_channels: int = 512,
        causal: bool = True,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        self.hop_length = math.prod(strides)
        dims = _stage_channels(base_channels, len(strides), max_channels)
        layers: list[nn.Module] = [StreamingConv1d(channels, dims[0], kernel_size, causal=causal)]
        for i, stride in enumerate(strides):
            layers += _residual_units(dims[i], residual_kernel_size, dilations, causal, compress, activation)
            layers += [
                make_activation(activation, dims[i], inplace=True),
                StreamingConv1d(dims[i], dims[i + 1], 2 * stride, stride=stride, causal=causal),
            ]
        layers += [
            make_activation(activation, dims[-1], inplace=True),
            StreamingConv1d(dims[-1], latent_dim, last_kernel_size, causal=causal),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x `[batch, channels, time]` -> `[batch, latent_dim, ceil(time / hop)]`."""
        return self.model(x)


class SEANetDecoder(StreamingModule):
    """Latent frames -> waveform; mirrors `SEANetEncoder` (same `strides` argument, encoder order)."""

    def __init__(
        self,
        channels: int = 1,
        latent_dim: int = 128,
        base_channels: int = 32,
        strides: Sequence[int] = (2, 4, 5, 8),
        dilations: Sequence[int] = (1, 3, 9),
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        compress: int = 2,
        max_channels: int = 512,
        causal: bool = True,
        activation: str = "elu",
        source_channels: int = 0,
    ) -> None:
        super().__init__()
        self.hop_length = math.prod(strides)
        dims = _stage_channels(base_channels, len(strides), max_channels)
        layers: list[nn.Module] = [StreamingConv1d(latent_dim, dims[-1], kernel_size, causal=causal)]
        for i in reversed(range(len(strides))):
            stride = strides[i]
            layers += [
                make_activation(activation, dims[i + 1], inplace=True),
                StreamingConvTranspose1d(dims[i + 1], dims[i], 2 * stride, stride=stride, causal=causal),
            ]
            self._full_rate = len(layers) - 1  # the last upsampling's output: where a source joins
            layers += _residual_units(dims[i], residual_kernel_size, dilations, causal, compress, activation)
        layers += [
            make_activation(activation, dims[0], inplace=True),
            StreamingConv1d(dims[0], channels, last_kernel_size, causal=causal),
        ]
        self.model = nn.Sequential(*layers)
        self.source_in: StreamingConv1d | None = None
        if source_channels:
            # zero at first (no weight norm, which cannot start at zero), so weights trained without a
            # source decode exactly as before
            self.source_in = StreamingConv1d(source_channels, dims[0], kernel_size, causal=causal, norm=False)
            nn.init.zeros_(self.source_in.conv.weight)
            nn.init.zeros_(self.source_in.conv.bias)

    def forward(self, z: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """z `[batch, latent_dim, frames]` -> `[batch, channels, frames * hop]`. source `[batch,
        source_channels, frames * hop]` (decoders built with `source_channels`): a full-rate signal, such as
        the harmonic source, added through `source_in` after the last upsampling, so that the last residual
        units can shape the output around it."""
        if self.source_in is None or source is None:
            if self.source_in is not None:
                raise ValueError("this decoder reads a source signal: pass source")
            return self.model(z)
        x = z
        for i, layer in enumerate(self.model):
            x = layer(x)
            if i == self._full_rate:
                x = x + self.source_in(source.to(x.dtype))
        return x
