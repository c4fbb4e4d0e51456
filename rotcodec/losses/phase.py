"""Locked-phase loss: the low harmonics' complex spectrum, on steps whose harmonic source is phase-locked.

The spectral losses compare magnitudes only, so they cannot tell a decode whose low harmonics are in phase
with the input from one whose are not, and PESQ-WB can: the input's phase below 1 kHz alone took a 12 kbps
decode from 2.60 to 3.53 (docs/results/phase_lock). Once the harmonic source is locked to the input's phase
(`HarmonicSynth.lock`, what a tier with phase rows sends), the phase of harmonics 1..K is reachable, and
this term asks for it: the relative L1 distance of the complex STFT over the bins below (K + 1/2) x F0 of
voiced frames. It is skipped on steps with a free-running source, whose phase no decoder could match.

Frame t's window (640 samples at the 16 kHz model's 320-sample hop: the frame and the next) is centred on
the frame's last sample, where the lock measures its offsets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LockedPhaseLoss(nn.Module):
    """`forward(estimate [batch, time], target [batch, time], f0 [batch, frames] in Hz (0 = unvoiced),
    harmonics)` -> sum |X_est - X_ref| / sum |X_ref| over the masked bins (0 when nothing is voiced)."""

    def __init__(self, sample_rate: int, hop: int) -> None:
        super().__init__()
        self.sample_rate, self.hop = sample_rate, hop
        self.n_fft = max(1024, 1 << (2 * hop - 1).bit_length())  # zero-padded: bins of 15.6 Hz at 16 kHz
        self.register_buffer("window", torch.hann_window(2 * hop), persistent=False)

    def spectrum(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x `[batch, time]` -> `[batch, bins, frames]` complex: window t spans samples [t hop, (t + 2) hop)."""
        left = self.n_fft // 2 - self.hop  # stft centres the window in n_fft samples
        need = (frames - 1) * self.hop + self.n_fft
        x = F.pad(x.float(), (left, max(0, need - left - x.shape[-1])))[..., :need]
        return torch.stft(
            x, self.n_fft, self.hop, win_length=2 * self.hop, window=self.window, center=False, return_complex=True
        )

    def forward(self, estimate: torch.Tensor, target: torch.Tensor, f0: torch.Tensor, harmonics: int) -> torch.Tensor:
        frames = f0.shape[-1]
        est, ref = self.spectrum(estimate, frames), self.spectrum(target, frames)
        freq = torch.arange(self.n_fft // 2 + 1, device=f0.device, dtype=torch.float32) * (
            self.sample_rate / self.n_fft
        )
        mask = (freq[None, :, None] < (harmonics + 0.5) * f0.float()[:, None, :]).float()  # unvoiced: F0 0
        ref_sum = (ref.abs() * mask).sum()
        return (est - ref).abs().mul(mask).sum() / ref_sum.clamp_min(1e-6)
