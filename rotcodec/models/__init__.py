"""Codec model: streaming SEANet encoder/decoder around the residual VQ, discriminators, model files."""

from .codec import Codec, CodecConfig, CodecInputError, CodecOutput
from .discriminators import Discriminator, DiscriminatorConfig, MultiPeriodDiscriminator, MultiScaleSTFTDiscriminator
from .io import ModelFile, ModelFileError, load_model, model_hash, read_model, save_model
from .seanet import SEANetDecoder, SEANetEncoder
from .streaming import StreamingConv1d, StreamingConvTranspose1d, StreamingError, StreamingModule

__all__ = [
    "Codec",
    "CodecConfig",
    "CodecInputError",
    "CodecOutput",
    "Discriminator",
    "DiscriminatorConfig",
    "ModelFile",
    "ModelFileError",
    "MultiPeriodDiscriminator",
    "MultiScaleSTFTDiscriminator",
    "SEANetDecoder",
    "SEANetEncoder",
    "StreamingConv1d",
    "StreamingConvTranspose1d",
    "StreamingError",
    "StreamingModule",
    "load_model",
    "model_hash",
    "read_model",
    "save_model",
]
