"""Vector quantization with the rotation trick: one stage (`VectorQuantizer`) and residual VQ."""

from .rotation import RotationRule, rotate_to, straight_through
from .rvq import ResidualVQ, RVQConfig, RVQOutput
from .vq import StageOutput, VectorQuantizer, VQConfig

__all__ = [
    "RotationRule",
    "rotate_to",
    "straight_through",
    "RVQConfig",
    "RVQOutput",
    "ResidualVQ",
    "StageOutput",
    "VectorQuantizer",
    "VQConfig",
]
