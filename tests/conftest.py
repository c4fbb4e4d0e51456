"""Helpers shared by several test modules (importable as `from conftest import ...`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from rotcodec.audio import UNKNOWN_FRAMES


def write_flac_without_length(path: Path) -> None:
    """A FLAC whose STREAMINFO states 0 total samples ("unknown"), as some encoders leave it; libsndfile
    then reports 2**63 - 1 frames and cannot seek in it."""
    sf.write(str(path), 0.1 * np.sin(np.arange(8000) / 5).astype(np.float32), 8000, format="FLAC")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    data[21] &= 0xF0  # the 36-bit total-samples field: low 4 bits of byte 21, then bytes 22..25
    data[22:26] = bytes(4)
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames >= UNKNOWN_FRAMES
