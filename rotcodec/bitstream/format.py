"""Streaming `.rcq` writer and reader: header, then chunk records, then an end record.

Each record starts with 10 bytes, little-endian: u16 frames, u32 payload bytes, u32 CRC32. The CRC covers
the chunk index (u32), the frames and byte-count fields and the payload, and is seeded with the header CRC,
so corrupted, reordered, dropped or spliced chunks are all detected. The end record has frames = 0 and
carries the total frame count in place of the byte count; a stream without it is reported as truncated.
All chunks hold exactly `chunk_frames` frames except the last, which may hold fewer.

Entropy mode: a chunk whose range-coded payload would not be shorter than plain bit packing
is stored plain-packed instead, so entropy coding never costs more than plain packing (audio unlike the
model's training data, e.g. singing through a speech model). The reader tells the two apart by length:
a payload of exactly the plain-packed size is plain.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rotcodec.bitstream.entropy import EntropyTables
from rotcodec.bitstream.errors import BitstreamError
from rotcodec.bitstream.header import CONTEXT_VERSION, CodingMode, RcqHeader, pack_header, read_header
from rotcodec.bitstream.packing import pack_codes, packed_size, unpack_codes
from rotcodec.outputs import atomic_file

_RECORD = struct.Struct("<HII")
_MAX_TOTAL_FRAMES = 0xFFFFFFFF


def _record_crc(seed: int, index: int, frames: int, count: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<IHI", index, frames, count), seed))


def _tables_for(header: RcqHeader, freqs: np.ndarray | None, context: np.ndarray | None) -> EntropyTables | None:
    if header.coding_mode != CodingMode.ENTROPY:
        return None
    if freqs is None:
        raise BitstreamError("entropy-coded .rcq streams need the model's frequency tables (freqs)")
    # version 5 and older streams were coded without context rows
    ctx = context if header.format_version >= CONTEXT_VERSION else None
    key = (tuple(header.codebook_sizes), _content(freqs), None if ctx is None else _content(ctx))
    tables = _TABLES.get(key)
    if tables is None:
        tables = EntropyTables(freqs, header.codebook_sizes, ctx)
        _TABLES[key] = tables
        while len(_TABLES) > _TABLES_KEPT:
            del _TABLES[next(iter(_TABLES))]
    return tables


def _content(table: np.ndarray) -> tuple:
    """A hashable key of an array's shape, dtype and values."""
    a = np.asarray(table)
    return a.shape, a.dtype.str, a.tobytes()


# Built tables by content: a model codes many files with the same few layouts, and building a layout's
# context tables (a quantized table per previous symbol) took ~4% of decoding a 10 s file.
_TABLES: dict[tuple, EntropyTables] = {}
_TABLES_KEPT = 16


class RcqWriter:
    """Write an `.rcq` stream to a binary file object, chunk by chunk.

    `write_chunk` accepts any number of frames and re-chunks them into `header.chunk_frames`-frame chunks,
    so the output bytes do not depend on how the caller split the codes. `close` flushes the last partial
    chunk and writes the end record; it does not close `fileobj`. Used as a context manager, the end record
    is written only when the block exits without an exception (a failed write stays detectably incomplete).
    """

    def __init__(
        self, fileobj: BinaryIO, header: RcqHeader, freqs: np.ndarray | None = None, context: np.ndarray | None = None
    ) -> None:
        if not isinstance(header, RcqHeader):
            raise BitstreamError(f"header must be an RcqHeader, got {type(header).__name__}")
        self.header = header
        self._tables = _tables_for(header, freqs, context)
        raw = pack_header(header, self._tables.crc if self._tables else 0)
        self._seed = zlib.crc32(raw[:-4])
        self._file = fileobj
        self._file.write(raw)
        self._sizes = np.asarray(header.codebook_sizes, dtype=np.int64)
        self._pending = np.zeros((header.channels, header.rows, 0), dtype=np.int64)
        self._index = 0
        self.total_frames = 0
        self.closed = False

    def _validate(self, codes: np.ndarray) -> np.ndarray:
        arr = np.asarray(codes)
        h = self.header
        if not np.issubdtype(arr.dtype, np.integer):
            raise BitstreamError(f"codes must be integers, got dtype {arr.dtype}")
        if arr.ndim != 3 or arr.shape[:2] != (h.channels, h.rows):
            raise BitstreamError(f"codes must be shaped [{h.channels}, {h.rows}, frames], got {arr.shape}")
        if arr.shape[2]:
            if arr.min() < 0:
                raise BitstreamError("codes must be non-negative")
            bad = np.nonzero(arr.max(axis=(0, 2)) >= self._sizes)[0]
            if bad.size:
                s = int(bad[0])
                raise BitstreamError(f"stage {s} has a code >= its codebook size {h.codebook_sizes[s]}")
        return arr.astype(np.int64)  # a copy: callers may reuse their buffer

    def _emit(self, chunk: np.ndarray) -> None:
        frames = chunk.shape[2]
        if self.total_frames + frames > _MAX_TOTAL_FRAMES:
            raise BitstreamError(f"an .rcq stream holds at most {_MAX_TOTAL_FRAMES} frames")
        plain_size = packed_size(frames, self.header.channels, self.header.codebook_sizes)
        payload = b"" if self._tables is None else self._tables.encode(chunk)
        if self._tables is None or len(payload) >= plain_size:  # never more than plain packing costs
            payload = pack_codes(chunk, self.header.codebook_sizes)
        crc = _record_crc(self._seed, self._index, frames, len(payload), payload)
        self._file.write(_RECORD.pack(frames, len(payload), crc) + payload)
        self._index += 1
        self.total_frames += frames

    def write_chunk(self, codes: np.ndarray) -> None:
        """Append codes[channels, n_q, frames] (any integer dtype, values in [0, K_s))."""
        if self.closed:
            raise BitstreamError("cannot write to a closed RcqWriter")
        arr = self._validate(codes)
        pending = np.concatenate([self._pending, arr], axis=2) if self._pending.shape[2] else arr
        n = self.header.chunk_frames
        full = pending.shape[2] // n
        for i in range(full):
            self._emit(pending[:, :, i * n : (i + 1) * n])
        self._pending = pending[:, :, full * n :]

    def close(self) -> None:
        """Flush the last partial chunk and write the end record (idempotent)."""
        if self.closed:
            return
        if self._pending.shape[2]:
            self._emit(self._pending)
        crc = _record_crc(self._seed, self._index, 0, self.total_frames, b"")
        self._file.write(_RECORD.pack(0, self.total_frames, crc))
        self.closed = True

    def __enter__(self) -> RcqWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()


class RcqReader:
    """Read an `.rcq` stream chunk by chunk; iterate to get int64 codes[channels, n_q, frames] per chunk.

    The header is parsed (and checked against `freqs` in entropy mode) on construction. Iteration ends
    only at a valid end record whose total frame count matches; truncation, corruption or trailing bytes
    raise BitstreamError. `total_frames` is set once iteration has finished.
    """

    def __init__(self, fileobj: BinaryIO, freqs: np.ndarray | None = None, context: np.ndarray | None = None) -> None:
        self._file = fileobj
        self.header, table_crc, self._seed = read_header(self._read)
        self._tables = _tables_for(self.header, freqs, context)
        if self._tables is not None and self._tables.crc != table_crc:
            raise BitstreamError("frequency tables do not match the ones this file was encoded with (wrong model?)")
        if self._tables is None and table_crc != 0:
            raise BitstreamError("corrupt .rcq header: plain-mode file carries an entropy table CRC")
        self.total_frames: int | None = None
        self._started = False

    def _read(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            part = self._file.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _plain_size(self, frames: int) -> int:
        return packed_size(frames, self.header.channels, self.header.codebook_sizes)

    def _max_payload(self, frames: int) -> int:
        if self._tables is None:
            return self._plain_size(frames)
        # 24-bit tables cost at most ~24 bits per code; plain fallback chunks (<= 16 bits per code) fit too
        return 4 * self.header.channels * self.header.rows * frames + 8

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise BitstreamError("an RcqReader can be iterated only once")
        self._started = True
        return self._chunks()

    def _chunks(self) -> Iterator[np.ndarray]:
        h = self.header
        index = total = 0
        short_seen = False
        while True:
            rec = self._read(_RECORD.size)
            if len(rec) < _RECORD.size:
                raise BitstreamError(f"truncated .rcq stream: ends before the end record (at chunk {index})")
            frames, count, crc = _RECORD.unpack(rec)
            if frames == 0:
                if crc != _record_crc(self._seed, index, 0, count, b""):
                    raise BitstreamError(f"corrupt .rcq end record (CRC mismatch after chunk {index})")
                if count != total:
                    raise BitstreamError(f"end record says {count} frames but the chunks hold {total}")
                if self._read(1):
                    raise BitstreamError("trailing bytes after the .rcq end record")
                self.total_frames = total
                return
            if short_seen or frames > h.chunk_frames:
                raise BitstreamError(f"corrupt .rcq chunk {index}: impossible frame count {frames}")
            short_seen = frames < h.chunk_frames
            limit = self._max_payload(frames)
            if count > limit or (self._tables is None and count != limit):
                raise BitstreamError(f"corrupt .rcq chunk {index}: payload size {count} is impossible")
            payload = self._read(count)
            if len(payload) < count:
                raise BitstreamError(f"truncated .rcq stream: chunk {index} payload is cut short")
            if crc != _record_crc(self._seed, index, frames, count, payload):
                raise BitstreamError(f"corrupt .rcq chunk {index}: CRC mismatch")
            if self._tables is None or count == self._plain_size(frames):
                codes = unpack_codes(payload, h.channels, frames, h.codebook_sizes)
            else:
                codes = self._tables.decode(payload, h.channels, frames)
            index += 1
            total += frames
            yield codes

    def read_all(self) -> np.ndarray:
        """All remaining codes as one int64 array [channels, n_q, total_frames]."""
        chunks = list(self)
        if not chunks:
            return np.zeros((self.header.channels, self.header.rows, 0), dtype=np.int64)
        return np.concatenate(chunks, axis=2)


def encode_bytes(
    header: RcqHeader, codes: np.ndarray, freqs: np.ndarray | None = None, context: np.ndarray | None = None
) -> bytes:
    """Whole `.rcq` stream for codes[channels, n_q, frames] as bytes."""
    buf = io.BytesIO()
    writer = RcqWriter(buf, header, freqs, context)
    writer.write_chunk(codes)
    writer.close()
    return buf.getvalue()


def decode_bytes(
    data: bytes, freqs: np.ndarray | None = None, context: np.ndarray | None = None
) -> tuple[RcqHeader, np.ndarray]:
    """Parse a whole `.rcq` stream: (header, int64 codes[channels, n_q, frames])."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f".rcq data must be bytes, got {type(data).__name__}")
    reader = RcqReader(io.BytesIO(bytes(data)), freqs, context)
    return reader.header, reader.read_all()


def write_rcq(path: str | Path, header: RcqHeader, codes: np.ndarray, freqs: np.ndarray | None = None) -> None:
    """Write an `.rcq` file atomically (`rotcodec.outputs.atomic_file`: a temporary file beside it, then renamed)."""
    with atomic_file(path, "wb") as f:  # readable as the umask allows, temp file removed on failure
        with RcqWriter(f, header, freqs) as writer:
            writer.write_chunk(codes)


def read_rcq(path: str | Path, freqs: np.ndarray | None = None) -> tuple[RcqHeader, np.ndarray]:
    """Read a whole `.rcq` file: (header, int64 codes[channels, n_q, frames])."""
    with open(path, "rb") as f:
        reader = RcqReader(f, freqs)
        return reader.header, reader.read_all()
