"""Find and load models (bundled, local or by `.rcq` fingerprint) and the module-level decompress helpers."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..bitstream import BitstreamError, RcqHeader
from ..bitstream.header import escape_text, read_header
from ..models.io import read_model
from ..pretrained import ModelNotFoundError, find_by_fingerprint, resolve_model
from .files import FileResult, Progress, open_rcq
from .model import CodecModel, OptionError


@functools.lru_cache(maxsize=4)
def _load_cached(base: str, source: str, device: str, mtime: float) -> CodecModel:
    # `base` is absolute (resolve_model makes it so), hence read as a path here, never as a bare name
    entry = resolve_model(Path(base))
    entry.source = source
    return CodecModel(read_model(entry.base, device), entry, device)


def load_model(name_or_path: str | os.PathLike | None = None, device: str = "cpu") -> CodecModel:
    """Load a codec by bundled/local name or model file path (None: the default `speech16k`).

    A bare name is looked up in `rotcodec.pretrained.search_dirs()` (bundled first, never the current
    directory); a local file is passed as a path (`./NAME`, `DIR/NAME.safetensors`, a `Path`).
    Raises ModelNotFoundError or ModelFileError (both ValueError) with a one-line message."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise OptionError(f"device {device!r} requested but CUDA is not available in this torch build")
    entry = resolve_model(name_or_path)
    mtime = entry.weights_path.stat().st_mtime
    return _load_cached(str(entry.base), entry.source, str(device), mtime)


def model_for_header(header: RcqHeader, device: str = "cpu") -> CodecModel:
    """The locally known model whose fingerprint matches the header (ModelNotFoundError if none)."""
    entry = find_by_fingerprint(header.model_hash, header.model_id)
    if entry is None:
        raise ModelNotFoundError(
            f"model '{escape_text(header.model_id)}' ({header.model_hash.hex()[:12]}) is not installed; "
            "pass it with --model (a bare name is looked up in the folders `rotcodec models` lists)"
        )
    return load_model(entry.base, device)


def decompress_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: CodecModel | str | os.PathLike | None = None,
    format: str = "wav",
    force: bool = False,
    progress: Progress | None = None,
    device: str = "cpu",
) -> FileResult:
    """`CodecModel.decompress_file`, with the model found from the header when `model` is None."""
    with open_rcq(src) as f:
        if model is None:
            pos = f.tell()
            model = model_for_header(read_header(f.read)[0], device)
            f.seek(pos)
        elif not isinstance(model, CodecModel):
            model = load_model(model, device)
        return model.decompress_file(f if os.fspath(src) == "-" else src, dst, format, force, progress)


def read_rcq_header(src: str | os.PathLike | bytes | BinaryIO) -> RcqHeader:
    """Parse only the header of an `.rcq` file, bytes or file object (BitstreamError if malformed)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return read_header(io.BytesIO(bytes(src)).read)[0]
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise BitstreamError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        with open(path, "rb") as f:
            return read_header(f.read)[0]
    return read_header(src.read)[0]


def decompress(data: bytes, model: CodecModel | str | os.PathLike | None = None) -> tuple[np.ndarray, int]:
    """`.rcq` bytes -> (float32 audio [channels, time], sample rate Hz). Without `model`, the model is
    found among bundled and local models by the header's fingerprint."""
    if model is None:
        model = model_for_header(read_rcq_header(data))
    elif not isinstance(model, CodecModel):
        model = load_model(model)
    return model.decompress(data)
