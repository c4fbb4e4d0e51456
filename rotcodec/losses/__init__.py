"""Training and evaluation losses: spectral, time-domain, adversarial."""

from ..dsp.pitch import frame_periodicity
from .adversarial import (
    AdversarialLossError,
    GeneratorLoss,
    LossConfig,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from .mel import LogMel, MultiScaleMelLoss
from .periodicity import AutocorrelationLoss, PeriodicityLoss
from .spectral import LossInputError, MultiResolutionSTFTLoss, TimeL1Loss

__all__ = [
    "AdversarialLossError",
    "AutocorrelationLoss",
    "GeneratorLoss",
    "LogMel",
    "LossConfig",
    "LossInputError",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
    "PeriodicityLoss",
    "TimeL1Loss",
    "discriminator_loss",
    "feature_matching_loss",
    "frame_periodicity",
    "generator_adversarial_loss",
]
