"""Training and evaluation losses: spectral, time-domain, adversarial."""

from .adversarial import (
    AdversarialLossError,
    GeneratorLoss,
    LossConfig,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from .mel import LogMel, MultiScaleMelLoss
from .spectral import LossInputError, MultiResolutionSTFTLoss, TimeL1Loss

__all__ = [
    "AdversarialLossError",
    "GeneratorLoss",
    "LogMel",
    "LossConfig",
    "LossInputError",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
    "TimeL1Loss",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
]
