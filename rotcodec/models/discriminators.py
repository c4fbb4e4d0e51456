"""GAN discriminators: multi-scale STFT (EnCodec-style, 2-D convs over the complex STFT's real/imag parts) and
multi-period waveform (HiFi-GAN-style, periods 2, 3, 5, 7, 11).

Every discriminator takes audio `[batch, channels, time]` (channels are folded into the batch, as in the
codec) and returns `(logits, features)`: one logits map per sub-discriminator and, for each, the list of its
hidden activations (for feature matching).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Logits = list[torch.Tensor]
Features = list[list[torch.Tensor]]


@dataclass
class DiscriminatorConfig:
    """msstft / mpd switch each family on or off. channels: STFT discriminator width; n_ffts: its
    resolutions (hop = n_fft // 4); mpd_channels/mpd_max_channels: first width and cap of the period
    discriminators (x4 per layer); periods: the waveform periods; slope: LeakyReLU negative slope."""

    msstft: bool = True
    mpd: bool = True
    channels: int = 32
    n_ffts: list[int] = field(default_factory=lambda: [1024, 2048, 512])
    mpd_channels: int = 16
    mpd_max_channels: int = 256
    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    slope: float = 0.2

    @property
    def enabled(self) -> bool:
        return self.msstft or self.mpd


def _fold(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 3:
        raise ValueError(f"expected audio [batch, channels, time], got shape {tuple(x.shape)}")
    return x.reshape(-1, 1, x.shape[-1])


def _run_all(discriminators: nn.ModuleList, x: torch.Tensor) -> tuple[Logits, Features]:
    """Each discriminator on the channel-folded input; their logits and feature lists, in order."""
    x = _fold(x)
    logits, feats = [], []
    for d in discriminators:
        lg, ft = d(x)
        logits.append(lg)
        feats.append(ft)
    return logits, feats


class STFTDiscriminator(nn.Module):
    """One STFT resolution: `[batch, 1, time]` -> logits `[batch, 1, frames', freq']`."""

    def __init__(self, n_fft: int, channels: int = 32, dilations: tuple[int, ...] = (1, 2, 4), slope: float = 0.2):
        super().__init__()
        self.n_fft = n_fft
        self.hop = n_fft // 4
        self.slope = slope
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in dilations:
            # Time axis dilated, frequency axis strided: the receptive field grows over time, shrinks over bins.
            convs.append(
                weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
            )
        convs.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(
            x.squeeze(1).float(),
            self.n_fft,
            self.hop,
            window=self.window,
            normalized=True,
            center=True,
            return_complex=True,
        )  # [batch, freq, frames]
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [batch, 2, frames, freq]
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), self.slope)
            feats.append(h)
        return self.post(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """STFT discriminators at several resolutions (default n_fft 1024, 2048, 512)."""

    def __init__(self, n_ffts: list[int] | tuple[int, ...] = (1024, 2048, 512), channels: int = 32, slope: float = 0.2):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels, slope=slope) for n in n_ffts)

    def forward(self, x: torch.Tensor) -> tuple[Logits, Features]:
        return _run_all(self.discriminators, x)


class PeriodDiscriminator(nn.Module):
    """Waveform folded by `period`: `[batch, 1, time] -> [batch, 1, time / period]` seen as a 2-D image
    `[batch, 1, time / period, period]`; logits `[batch, 1, frames', period]`."""

    def __init__(self, period: int, channels: int = 16, max_channels: int = 256, slope: float = 0.2):
        super().__init__()
        self.period = period
        self.slope = slope
        widths = [1] + [min(channels * 4**i, max_channels) for i in range(4)]
        convs = [
            weight_norm(nn.Conv2d(widths[i], widths[i + 1], (5, 1), stride=(3, 1), padding=(2, 0))) for i in range(4)
        ]
        convs.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        pad = (-t) % self.period
        if pad:
            # Reflect needs more samples than the pad; zeros are fine for very short inputs.
            x = F.pad(x, (0, pad), mode="reflect" if t > pad else "constant")
        h = x.view(b, c, -1, self.period)
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), self.slope)
            feats.append(h)
        return self.post(h), feats


class MultiPeriodDiscriminator(nn.Module):
    """Period discriminators for periods 2, 3, 5, 7, 11 (HiFi-GAN)."""

    def __init__(
        self,
        periods: list[int] | tuple[int, ...] = (2, 3, 5, 7, 11),
        channels: int = 16,
        max_channels: int = 256,
        slope: float = 0.2,
    ):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels, max_channels, slope) for p in periods)

    def forward(self, x: torch.Tensor) -> tuple[Logits, Features]:
        return _run_all(self.discriminators, x)


class Discriminator(nn.Module):
    """All enabled discriminators; `forward` concatenates their logits and feature lists. With both
    families switched off it has no parameters and returns empty lists (train without a GAN)."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = cfg
        self.msstft = MultiScaleSTFTDiscriminator(cfg.n_ffts, cfg.channels, cfg.slope) if cfg.msstft else None
        self.mpd = (
            MultiPeriodDiscriminator(cfg.periods, cfg.mpd_channels, cfg.mpd_max_channels, cfg.slope)
            if cfg.mpd
            else None
        )

    def forward(self, x: torch.Tensor) -> tuple[Logits, Features]:
        """x `[batch, channels, time]` -> (logits per sub-discriminator, features per sub-discriminator)."""
        logits: Logits = []
        feats: Features = []
        for family in (self.msstft, self.mpd):
            if family is not None:
                lg, ft = family(x)
                logits += lg
                feats += ft
        return logits, feats
