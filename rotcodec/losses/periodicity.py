"""Frame-wise periodicity (voicing strength) of audio and the periodicity loss.

Periodicity of a frame = the largest normalised autocorrelation over pitch lags of 60..400 Hz: about
0.8-1 for voiced speech, 0.1-0.3 for noise. Spectral L1 losses let a decoder that is unsure of the pitch
settle for a smooth, noise-excited envelope (the L1-optimal average of many harmonic spectra); this loss
asks each output frame to be as periodic as the reference frame, at whatever lag, so the decoder has to
commit to a pitch and the mel loss then pulls that pitch to the right one. The same function scores
codecs in `rotcodec.eval` (periodicity error, after CARGAN's metric, Morrison et al. 2022).

Frames are 40 ms (two periods of a 60 Hz voice) with a 10 ms hop.
"""

from __future__ import annotations

import torch
from torch import nn

from ..dsp.pitch import active_frames, frame_periodicity, normalised_autocorrelation
from .spectral import check_pair


class _ActiveFrameLoss(nn.Module):
    """Mean per-frame L1 distance of a frame feature over the target's active frames. Inputs `[batch,
    channels, time]` at `sample_rate` Hz; returns a scalar (0 for identical inputs)."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (feature `[..., frames, k]`, energy `[..., frames]` in dB)."""
        raise NotImplementedError

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(estimate, target)
        f_est, _ = self.features(estimate.float())
        with torch.no_grad():
            f_ref, e_ref = self.features(target.float())
            mask = active_frames(e_ref).float()
        if mask.numel() == 0:
            return estimate.new_zeros((), dtype=torch.float32)
        per_frame = (f_est - f_ref).abs().mean(dim=-1)
        return (per_frame * mask).sum() / mask.sum().clamp_min(1.0)


class PeriodicityLoss(_ActiveFrameLoss):
    """Mean |periodicity(target) - periodicity(estimate)| over the target's active frames: asks each frame
    to be as voiced as the reference, at any pitch."""

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, e = frame_periodicity(x, self.sample_rate)
        return p.unsqueeze(-1), e


class AutocorrelationLoss(_ActiveFrameLoss):
    """Mean |acf(target) - acf(estimate)| of the normalised autocorrelation over pitch lags (60..400 Hz),
    over the target's active frames. Unlike `PeriodicityLoss`, which accepts any pitch, this asks for the
    reference's pitch period: the autocorrelation peaks sit at its multiples, and the curve is smooth in
    the lag, so it gives the decoder a gradient towards the right pitch where a fine spectral loss has
    many local minima."""

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalised_autocorrelation(x, self.sample_rate)
