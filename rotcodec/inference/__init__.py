"""Python inference API: compress audio to `.rcq` bytes/files and back, streaming chunk by chunk.

    >>> from rotcodec.inference import load_model, decompress
    >>> model = load_model()                          # bundled `speech16k`, or a name / model file path
    >>> data = model.compress(wav, sr, kbps=3.0)      # wav: numpy [channels, time] or [time], sr in Hz
    >>> audio, sr = decompress(data)                  # model found from the header's fingerprint

Audio is numpy float32 `[channels, time]` at any sample rate: it is resampled (soxr HQ, streaming) to the
model rate, each channel is coded independently, and decoding restores the original rate, channel count
and exact sample count. Files stream in blocks (`block_seconds`), so memory does not grow with the file
length, and the codes do not depend on the block size. Models with code-frequency tables use entropy coding
by default. Bad input raises a ValueError subclass with a one-line message.
"""

from __future__ import annotations

from .files import AudioSource, FileResult, OutputError, OutputExistsError, atomic_output, open_audio, open_rcq
from .loading import decompress, decompress_file, load_model, model_for_header, read_rcq_header
from .model import CodecModel, ModelMismatchError, OptionError, expected_frames

__all__ = [
    "AudioSource",
    "CodecModel",
    "FileResult",
    "ModelMismatchError",
    "OutputError",
    "OutputExistsError",
    "OptionError",
    "decompress",
    "decompress_file",
    "expected_frames",
    "load_model",
    "model_for_header",
    "open_audio",
    "open_rcq",
    "atomic_output",
    "read_rcq_header",
]
