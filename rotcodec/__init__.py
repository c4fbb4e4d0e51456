"""rotcodec: neural audio compression with rotation-trick residual vector quantization.

Python API (imported lazily, so `import rotcodec` stays cheap):
    model = rotcodec.load_model()                 # bundled default, a name, or a path
    data = model.compress(wav, sr, kbps=6)         # bytes in the .rcq format
    wav, sr = rotcodec.decompress(data)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"load_model", "decompress", "CodecModel"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'rotcodec' has no attribute {name!r}")
