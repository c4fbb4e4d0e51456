"""Plain-mode payload: each code stored in exactly ceil(log2 K) bits, vectorised with numpy.

Bit order: stages in order, within a stage channels in order, within a channel frames in order
(i.e. codes[C, n_q, F] transposed to [n_q, C, F] and flattened); each code written MSB first;
the last byte is zero-padded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rotcodec.bitstream.errors import BitstreamError


def code_bits(k: int) -> int:
    """Bits per code for a codebook of size k >= 2: ceil(log2 k)."""
    return (int(k) - 1).bit_length()


def packed_size(frames: int, channels: int, codebook_sizes: Sequence[int]) -> int:
    """Bytes of a plain payload holding `frames` frames of codes[channels, n_q, frames]."""
    bits = frames * channels * sum(code_bits(k) for k in codebook_sizes)
    return (bits + 7) // 8


def pack_codes(codes: np.ndarray, codebook_sizes: Sequence[int]) -> bytes:
    """Pack validated codes[C, n_q, F] (ints in [0, K_s)) into ceil(log2 K_s) bits each."""
    channels, n_q, frames = codes.shape
    pieces = []
    for s in range(n_q):
        width = code_bits(codebook_sizes[s])
        values = np.ascontiguousarray(codes[:, s, :], dtype=">u2").reshape(-1)
        # big-endian uint16 bytes unpack MSB first; keep the low `width` bits of each code
        bits = np.unpackbits(values.view(np.uint8).reshape(-1, 2), axis=1)[:, 16 - width :]
        pieces.append(bits.reshape(-1))
    if not pieces:
        return b""
    return np.packbits(np.concatenate(pieces)).tobytes()


def unpack_codes(payload: bytes, channels: int, frames: int, codebook_sizes: Sequence[int]) -> np.ndarray:
    """Inverse of `pack_codes`: returns int64 codes[channels, n_q, frames].

    Raises BitstreamError when the payload length is wrong, padding bits are set, or a code is >= K.
    """
    n_q = len(codebook_sizes)
    expected = packed_size(frames, channels, codebook_sizes)
    if len(payload) != expected:
        raise BitstreamError(f"plain payload is {len(payload)} bytes, expected {expected}")
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
    n = channels * frames
    out = np.empty((n_q, n), dtype=np.int64)
    offset = 0
    for s in range(n_q):
        width = code_bits(codebook_sizes[s])
        full = np.zeros((n, 16), dtype=np.uint8)
        full[:, 16 - width :] = bits[offset : offset + n * width].reshape(n, width)
        offset += n * width
        out[s] = np.packbits(full, axis=1).view(">u2").reshape(-1)
        if n and int(out[s].max()) >= codebook_sizes[s]:
            raise BitstreamError(f"plain payload holds a code >= codebook size {codebook_sizes[s]}")
    if bits[offset:].any():
        raise BitstreamError("plain payload has non-zero padding bits")
    return np.ascontiguousarray(out.reshape(n_q, channels, frames).transpose(1, 0, 2))
