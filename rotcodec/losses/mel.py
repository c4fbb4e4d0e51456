"""Log-mel spectrograms in torch (runs on GPU) with librosa's mel filter bank, and the multi-scale mel L1.

The filter bank is built once per (sample rate, n_fft, n_mels) and cached: librosa's first call compiles
with numba (~20 s), which must stay out of hot paths.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

# (n_fft, n_mels) pairs in the style of DAC's multi-scale mel loss; hop = n_fft // 4.
DEFAULT_SCALES: tuple[tuple[int, int], ...] = (
    (32, 5),
    (64, 10),
    (128, 20),
    (256, 40),
    (512, 80),
    (1024, 160),
    (2048, 320),
)


@functools.lru_cache(maxsize=64)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa  # lazy: import and first call are slow

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2)


class LogMel(nn.Module):
    """Log-magnitude mel spectrogram. Input `[batch, time]` or `[batch, channels, time]` (Hz-rate audio),
    output `[batch, (channels,) n_mels, frames]` in log10 units, clamped at `1e-5`."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, hop_length: int | None = None) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length or n_fft // 4
        self.register_buffer("fb", torch.from_numpy(_mel_basis(sample_rate, n_fft, n_mels)).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, center=True, return_complex=True).abs()
        mel = torch.matmul(self.fb, spec)
        return torch.log10(mel.clamp_min(1e-5)).reshape(*shape[:-1], mel.shape[-2], mel.shape[-1])


class MultiScaleMelLoss(nn.Module):
    """Multi-scale log-mel L1 distance (DAC-style mel distance), averaged over scales.

    Inputs `[batch, channels, time]` at `sample_rate` Hz; returns a scalar.
    """

    def __init__(self, sample_rate: int, scales: tuple[tuple[int, int], ...] = DEFAULT_SCALES) -> None:
        super().__init__()
        usable = [(n, m) for n, m in scales if m <= n // 2 + 1]
        self.mels = nn.ModuleList(LogMel(sample_rate, n, m) for n, m in usable)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = estimate.new_zeros((), dtype=torch.float32)
        for mel in self.mels:
            total = total + (mel(estimate) - mel(target)).abs().mean()
        return total / len(self.mels)
