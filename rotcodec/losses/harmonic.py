"""Harmonic amplitude loss: teaches the harmonic source (models/harmonic.py) the reference's harmonic levels.

The spectral losses alone cannot start that branch. Its sines have a phase unrelated to the voice's, so
waveform-level gradients average out; what is left is the extra energy they add on top of a decoder that
already matches the reference's level in every mel band. So the gradient only turns the branch down (a
fine-tune without this loss left it at 0% of the output energy: `docs/results/harmonics`). This loss measures
each harmonic's amplitude in the reference at the transmitted F0 and asks the branch for it directly, in log
terms. The spectral losses then make the SEANet decoder give up the voiced energy it used to supply.

Measurement: a 1024-sample Hann STFT centred on each frame's last sample (where the synthesiser reaches
that frame's amplitudes); a sine of amplitude A peaks at A * sum(window) / 2 in its bin. The larger of the
two bins around k * F0 is read, so scalloping costs at most 1.4 dB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_FFT = 1024
FLOOR = 1e-4  # amplitude floor of the log distance (-80 dB re full scale): inaudible harmonics do not count


def measured_amplitudes(
    wav: torch.Tensor, f0: torch.Tensor, sample_rate: int, hop: int, harmonics: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """wav `[batch, time]`, F0 `[batch, frames]` in Hz (0 = unvoiced) -> (amplitude of harmonics 1..H
    `[batch, H, frames]`, mask `[batch, H, frames]`: voiced frames, harmonics below 0.475 x the rate)."""
    frames = f0.shape[-1]
    left = N_FFT // 2 - hop  # frame t's window is centred on sample (t + 1) * hop
    need = (frames - 1) * hop + N_FFT
    x = F.pad(wav.float(), (max(left, 0), max(0, need - wav.shape[-1] - left)))[..., max(-left, 0) :]
    window = torch.hann_window(N_FFT, device=wav.device)
    spec = torch.stft(x, N_FFT, hop, window=window, center=False, return_complex=True).abs()[..., :frames]
    f0 = f0.float()
    orders = torch.arange(1, harmonics + 1, device=spec.device, dtype=torch.float32)
    freq = orders[None, :, None] * f0[:, None, :]  # [batch, H, frames]
    bin_ = (freq * N_FFT / sample_rate).floor().long().clamp(0, N_FFT // 2 - 1)
    spec = spec.transpose(1, 2)  # [batch, frames, bins]
    lo = spec.gather(-1, bin_.transpose(1, 2))
    hi = spec.gather(-1, (bin_ + 1).transpose(1, 2))
    amps = torch.maximum(lo, hi).transpose(1, 2) / (window.sum() / 2)
    mask = (f0[:, None, :] > 0) & (freq < 0.475 * sample_rate)
    return amps, mask


class HarmonicAmplitudeLoss(nn.Module):
    """Mean |log(predicted + floor) - log(measured + floor)| over voiced frames and audible harmonics.
    `forward(target [batch, time], f0 [batch, frames] in Hz (0 = unvoiced), amps [batch, H, frames])` ->
    scalar (0 when nothing is voiced)."""

    def __init__(self, sample_rate: int, hop: int) -> None:
        super().__init__()
        self.sample_rate, self.hop = sample_rate, hop

    def forward(self, target: torch.Tensor, f0: torch.Tensor, amps: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref, mask = measured_amplitudes(target, f0, self.sample_rate, self.hop, amps.shape[1])
        dist = (torch.log(amps.float() + FLOOR) - torch.log(ref + FLOOR)).abs()
        weight = mask.float()
        return (dist * weight).sum() / weight.sum().clamp_min(1.0)
