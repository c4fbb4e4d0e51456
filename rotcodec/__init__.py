"""rotcodec: neural audio compression with rotation-trick residual vector quantization."""

__version__ = "0.1.0"
