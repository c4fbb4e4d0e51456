"""Adversarial losses (hinge, least squares), feature matching, and the combined generator objective.

Logits are lists with one tensor per sub-discriminator (any shape); every loss averages over elements,
then over sub-discriminators. Feature matching:
- "relative" (EnCodec): per layer mean|f_fake - f_real| / mean|f_real|, so every layer weighs about the same
  whatever its scale;
- "l1" (HiFi-GAN/DAC): per layer mean|f_fake - f_real|.
The real features are detached (the generator cannot move the real branch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .harmonic import HarmonicAmplitudeLoss
from .mel import DEFAULT_SCALES, MultiScaleMelLoss
from .periodicity import AutocorrelationLoss, PeriodicityLoss
from .phase import LockedPhaseLoss
from .spectral import MultiResolutionSTFTLoss, TimeL1Loss, check_pair
from .stft import PairSpectra

ADV_KINDS = ("hinge", "lsgan")
FEAT_KINDS = ("relative", "l1")


class AdversarialLossError(ValueError):
    """Unknown loss kind or mismatched discriminator outputs."""


def _check_kind(kind: str) -> None:
    if kind not in ADV_KINDS:
        raise AdversarialLossError(f"adversarial loss must be one of {ADV_KINDS}, got {kind!r}")


def _mean(terms: list[torch.Tensor]) -> torch.Tensor:
    if not terms:
        raise AdversarialLossError("no discriminator outputs given")
    return torch.stack([t.float() for t in terms]).mean()


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor], kind: str = "hinge") -> torch.Tensor:
    """Discriminator objective. hinge: relu(1 - D(x)) + relu(1 + D(G(z))); lsgan: (1 - D(x))^2 + D(G(z))^2.
    Pass `fake` computed on detached generator output."""
    _check_kind(kind)
    if len(real) != len(fake):
        raise AdversarialLossError(f"{len(real)} real vs {len(fake)} fake logits")
    if kind == "hinge":
        terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True)]
    else:
        terms = [(1 - r).pow(2).mean() + f.pow(2).mean() for r, f in zip(real, fake, strict=True)]
    return _mean(terms)


def generator_adversarial_loss(fake: list[torch.Tensor], kind: str = "hinge") -> torch.Tensor:
    """Generator objective. hinge: relu(1 - D(G(z))) (EnCodec); lsgan: (1 - D(G(z)))^2 (HiFi-GAN/DAC)."""
    _check_kind(kind)
    if kind == "hinge":
        return _mean([F.relu(1 - f).mean() for f in fake])
    return _mean([(1 - f).pow(2).mean() for f in fake])


def feature_matching_loss(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]], kind: str = "relative"
) -> torch.Tensor:
    """Feature-matching distance between discriminator activations (see the module doc for `kind`)."""
    if kind not in FEAT_KINDS:
        raise AdversarialLossError(f"feature matching must be one of {FEAT_KINDS}, got {kind!r}")
    if len(real) != len(fake):
        raise AdversarialLossError(f"{len(real)} real vs {len(fake)} fake feature lists")
    terms = []
    for real_layers, fake_layers in zip(real, fake, strict=True):
        for r, f in zip(real_layers, fake_layers, strict=True):
            r = r.detach().float()
            dist = (f.float() - r).abs().mean()
            if kind == "relative":
                dist = dist / r.abs().mean().clamp_min(1e-8)
            terms.append(dist)
    return _mean(terms)


@dataclass
class LossConfig:
    """Weights of the generator loss terms (0 switches a term off and skips computing it): mel (multi-scale
    mel L1), mrstft (multi-resolution STFT), l1 (waveform), periodicity (frame voicing strength) and acf
    (autocorrelation over pitch lags: the reference's pitch; both in `periodicity.py`), harmonic (the
    harmonic source's amplitudes against the reference's, `harmonic.py`; models with pitch), phase (the locked
    harmonics' complex spectrum, `phase.py`; only on steps whose harmonic source is locked), adv (adversarial),
    feat (feature matching),
    vq (the quantizer's already-weighted commitment/codebook loss). adversarial: "hinge" or "lsgan";
    feature_matching: "relative" or "l1"; mel_scales: (n_fft, n_mels) pairs; stft_sizes: MR-STFT n_ffts."""

    mel: float = 15.0
    mrstft: float = 1.0
    l1: float = 0.0
    periodicity: float = 0.0
    acf: float = 0.0
    harmonic: float = 0.0
    phase: float = 0.0
    adv: float = 1.0
    feat: float = 2.0
    vq: float = 1.0
    adversarial: str = "hinge"
    feature_matching: str = "relative"
    mel_scales: list[list[int]] = field(default_factory=lambda: [list(s) for s in DEFAULT_SCALES])
    stft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128])

    def __post_init__(self) -> None:
        _check_kind(self.adversarial)
        if self.feature_matching not in FEAT_KINDS:
            raise AdversarialLossError(f"feature_matching must be one of {FEAT_KINDS}, got {self.feature_matching!r}")
        for name in ("mel", "mrstft", "l1", "periodicity", "acf", "harmonic", "phase", "adv", "feat", "vq"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")


class GeneratorLoss(nn.Module):
    """Weighted sum of the reconstruction, adversarial, feature-matching and VQ terms.

    `forward(estimate, target, vq_loss=None, fake_logits=None, fake_features=None, real_features=None,
    harmonic=None)` with audio `[batch, channels, time]` at `sample_rate` Hz returns `(total, parts)`: parts maps each
    computed term's name to its unweighted value (detached scalar tensors, no host sync) plus "total".
    Adversarial/feature terms are computed only when their weight > 0 and discriminator outputs are given;
    the harmonic term only with `hop_length` and a pitch model's `harmonic` outputs.
    """

    def __init__(self, cfg: LossConfig, sample_rate: int, hop_length: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        scales = tuple((int(n), int(m)) for n, m in cfg.mel_scales)
        self.mel = MultiScaleMelLoss(sample_rate, scales) if cfg.mel > 0 else None
        self.mrstft = MultiResolutionSTFTLoss(cfg.stft_sizes) if cfg.mrstft > 0 else None
        self.l1 = TimeL1Loss() if cfg.l1 > 0 else None
        self.periodicity = PeriodicityLoss(sample_rate) if cfg.periodicity > 0 else None
        self.acf = AutocorrelationLoss(sample_rate) if cfg.acf > 0 else None
        use_harmonic = cfg.harmonic > 0 and hop_length is not None
        self.harmonic = HarmonicAmplitudeLoss(sample_rate, hop_length) if use_harmonic else None
        use_phase = cfg.phase > 0 and hop_length is not None
        self.phase = LockedPhaseLoss(sample_rate, hop_length) if use_phase else None

    def forward(
        self,
        estimate: torch.Tensor,
        target: torch.Tensor,
        vq_loss: torch.Tensor | None = None,
        fake_logits: list[torch.Tensor] | None = None,
        fake_features: list[list[torch.Tensor]] | None = None,
        real_features: list[list[torch.Tensor]] | None = None,
        harmonic: tuple[torch.Tensor, torch.Tensor] | None = None,
        locked: int = 0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`harmonic`: (F0 `[batch * channels, frames]` in Hz, amplitudes `[batch * channels, H, frames]`) of
        a model with pitch (`CodecOutput.f0`, `.harmonic_amps`); `locked`: how many of its harmonics were
        phase-locked to `target` (`CodecOutput.locked`; the phase term needs it and `harmonic`)."""
        check_pair(estimate, target)
        cfg = self.config
        weighted: dict[str, tuple[float, torch.Tensor]] = {}
        spectra = PairSpectra(estimate, target)  # STFTs the mel and MR-STFT losses share, computed once each
        if self.mel is not None:
            weighted["mel"] = (cfg.mel, self.mel(estimate, target, spectra))
        if self.mrstft is not None:
            weighted["mrstft"] = (cfg.mrstft, self.mrstft(estimate, target, spectra))
        if self.l1 is not None:
            weighted["l1"] = (cfg.l1, self.l1(estimate, target))
        if self.periodicity is not None:
            weighted["periodicity"] = (cfg.periodicity, self.periodicity(estimate, target))
        if self.acf is not None:
            weighted["acf"] = (cfg.acf, self.acf(estimate, target))
        if cfg.harmonic > 0 and harmonic is not None:
            f0, amps = harmonic
            if self.harmonic is None:
                raise ValueError("the harmonic loss needs the codec's hop_length: GeneratorLoss(..., hop_length=)")
            weighted["harmonic"] = (cfg.harmonic, self.harmonic(target.reshape(-1, target.shape[-1]), f0, amps))
        if self.phase is not None and locked > 0 and harmonic is not None:
            flat = estimate.reshape(-1, estimate.shape[-1]), target.reshape(-1, target.shape[-1])
            weighted["phase"] = (cfg.phase, self.phase(*flat, harmonic[0], locked))
        if cfg.adv > 0 and fake_logits:
            weighted["adv"] = (cfg.adv, generator_adversarial_loss(fake_logits, cfg.adversarial))
        if cfg.feat > 0 and fake_features and real_features:
            weighted["feat"] = (cfg.feat, feature_matching_loss(real_features, fake_features, cfg.feature_matching))
        if cfg.vq > 0 and vq_loss is not None:
            weighted["vq"] = (cfg.vq, vq_loss.float())
        total = estimate.new_zeros((), dtype=torch.float32)
        for w, value in weighted.values():
            total = total + w * value
        parts = {name: value.detach() for name, (_, value) in weighted.items()}
        parts["total"] = total.detach()
        return total, parts
