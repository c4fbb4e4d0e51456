"""Log-mel spectrograms in torch (runs on GPU) with librosa's mel filter bank, and the multi-scale mel L1.

The filter bank is built once per (sample rate, n_fft, n_mels) and cached: librosa's first call compiles
with numba (~20 s), which must stay out of hot paths.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from .stft import PairSpectra

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
        mel = self.from_magnitude(spec)
        return mel.reshape(*shape[:-1], mel.shape[-2], mel.shape[-1])

    def from_magnitude(self, spec: torch.Tensor) -> torch.Tensor:
        """|STFT| `[..., n_fft // 2 + 1, frames]` (this module's framing) -> log10 mel `[..., n_mels, frames]`."""
        return torch.log10(torch.matmul(self.fb, spec).clamp_min(1e-5))


class MultiScaleMelLoss(nn.Module):
    """Multi-scale log-mel L1 distance (DAC-style mel distance), averaged over scales.

    Inputs `[batch, channels, time]` at `sample_rate` Hz; returns a scalar. `spectra`: the pair's shared
    `PairSpectra` (`GeneratorLoss` passes one to this loss and the multi-resolution STFT loss).
    """

    def __init__(self, sample_rate: int, scales: tuple[tuple[int, int], ...] = DEFAULT_SCALES) -> None:
        super().__init__()
        usable = [(n, m) for n, m in scales if m <= n // 2 + 1]
        self.mels = nn.ModuleList(LogMel(sample_rate, n, m) for n, m in usable)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor, spectra: PairSpectra | None = None) -> torch.Tensor:
        spectra = PairSpectra(estimate, target) if spectra is None else spectra
        total = estimate.new_zeros((), dtype=torch.float32)
        for mel in self.mels:
            est, ref = spectra.magnitudes(mel.n_fft, mel.hop_length)
            with torch.no_grad():  # the target's side needs no graph
                ref = mel.from_magnitude(ref)
            total = total + (mel.from_magnitude(est) - ref).abs().mean()
        return total / len(self.mels)
