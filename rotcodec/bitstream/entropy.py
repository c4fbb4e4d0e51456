"""Entropy-mode payload: range coding (constriction) with per-stage categorical models.

The frequency tables live with the model: an array of counts [n_q_total, K]. Each stage's counts become
an integer table summing to 2**24 with a floor, so every code, seen in training or not, stays codable
(an unseen code costs at most about log2(K) + 10 bits). The integer tables are the normative model; their
CRC32 goes into the header so a file decoded with the wrong tables fails loudly instead of yielding noise.
Symbol order inside a chunk is the same as plain mode: stage, then channel, then frame.

Context rows (format version 6): a model may also ship, for its small-alphabet side rows (band gains and
phases), counts of each symbol after each symbol of the previous frame `[rows, K, K]`. Such a row is coded
with the table of the previous frame's symbol (the first frame of a chunk with the row's own table), so
chunks still decode alone: band gains follow the decoder's error, which drifts slowly, and a 48-band tier's
gains cost 10-20% less (`docs/results/context_coding/`). Context rows come first in a chunk, frame by
frame (within a frame row by row, within a row channel by channel), so the decoder knows every previous
symbol when it needs it; the other rows follow in plain order.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import constriction
import numpy as np

from rotcodec.bitstream.errors import BitstreamError
from rotcodec.bitstream.packing import packed_size

TABLE_BITS = 24
_FLOOR_SHIFT = 10  # 2**-10 of the probability mass is spread uniformly over all codes
_MAX_COUNT_BITS = 38  # keeps counts * (2**24) inside int64
# A context table mixes the row's own table in with the weight of this many counts: contexts seen rarely in the
# training audio fall back to the row's overall frequencies instead of a floor.
CONTEXT_PRIOR = 8


def estimate_frequencies(code_arrays: Iterable[np.ndarray], codebook_sizes: Sequence[int]) -> np.ndarray:
    """Count code usage per stage, to ship with the model as its entropy tables.

    code_arrays: arrays of codes [channels, n_q, frames] (or [n_q, frames]) with n_q <= len(codebook_sizes).
    Returns int64 counts [len(codebook_sizes), max(codebook_sizes)]; column k of row s counts code k.
    """
    sizes = [int(k) for k in codebook_sizes]
    counts = np.zeros((len(sizes), max(sizes)), dtype=np.int64)
    for i, arr in enumerate(code_arrays):
        codes = np.asarray(arr)
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3 or codes.shape[1] > len(sizes) or not np.issubdtype(codes.dtype, np.integer):
            raise BitstreamError(f"code array {i} must be integer [channels, n_q<={len(sizes)}, frames]")
        for s in range(codes.shape[1]):
            stage = codes[:, s, :].reshape(-1)
            if stage.size and (stage.min() < 0 or stage.max() >= sizes[s]):
                raise BitstreamError(f"code array {i} stage {s} has codes outside [0, {sizes[s]})")
            counts[s, : sizes[s]] += np.bincount(stage, minlength=sizes[s])
    return counts


def quantize_counts(counts: np.ndarray, k: int) -> np.ndarray:
    """Integer frequency table (uint32, length k, sum 2**24, every entry >= 1) from raw counts [k]."""
    total = 1 << TABLE_BITS
    c = counts.astype(np.int64)
    top = int(c.max()) if c.size else 0
    shift = max(0, top.bit_length() - _MAX_COUNT_BITS)
    c = c >> shift
    if int(c.sum()) == 0:
        c = np.ones(k, dtype=np.int64)
    floor = max(1, (total >> _FLOOR_SHIFT) // k)
    spread = total - floor * k
    q = floor + (c * spread) // int(c.sum())
    q[int(np.argmax(c))] += total - int(q.sum())
    return q.astype(np.uint32)


def expected_bits(counts: np.ndarray, k: int) -> float:
    """Bits per symbol that range coding with the table `quantize_counts(counts, k)` spends on symbols drawn
    from that same table: its entropy."""
    p = quantize_counts(np.asarray(counts)[:k], k).astype(np.float64) / (1 << TABLE_BITS)
    return float(-(p * np.log2(p)).sum())


def context_table(after: np.ndarray, overall: np.ndarray, k: int) -> np.ndarray:
    """Integer tables (uint32 `[k + 1, k]`, each row as `quantize_counts`) of a context row: row 0 is the row's
    own table (a chunk's first frame), row p + 1 codes a symbol after symbol p. after: counts `[>=k, >=k]` of
    symbol j after symbol p; overall: the row's counts `[>=k]`, mixed in with the weight of CONTEXT_PRIOR counts
    (integer arithmetic, so every reader builds the same)."""
    a = np.asarray(after, dtype=np.int64)[:k, :k]
    o = np.asarray(overall, dtype=np.int64)[:k]
    scale = max(1, int(o.sum()))
    own = quantize_counts(o, k)
    return np.stack([own, *(quantize_counts(a[p] * scale + CONTEXT_PRIOR * o, k) for p in range(k))])


def _as_counts(freqs: np.ndarray) -> np.ndarray:
    arr = np.asarray(freqs)
    if arr.ndim != 2:
        raise BitstreamError(f"frequency table must be 2-D [n_q_total, K], got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and arr.min() < 0:
            raise BitstreamError("frequency table has negative counts")
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.floating):
        raise BitstreamError(f"frequency table must hold numbers, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)) or (arr.size and arr.min() < 0) or np.any(arr != np.floor(arr)):
        raise BitstreamError("frequency table must hold finite non-negative integer counts")
    if arr.size and arr.max() >= 2.0**62:
        raise BitstreamError("frequency table counts are too large")
    return arr.astype(np.int64)


class EntropyTables:
    """Per-stage categorical models for the stages a file uses.

    freqs: counts [n_q_total, K] with n_q_total >= len(codebook_sizes) and K == max(codebook_sizes);
    stage s uses the first codebook_sizes[s] columns of row s. context: optional counts [rows, Kc, Kc] of
    each symbol after each symbol of the previous frame, for the first `rows` stream rows; a row whose counts
    are all zero, or whose alphabet is wider than Kc, is coded without context.
    """

    def __init__(self, freqs: np.ndarray, codebook_sizes: Sequence[int], context: np.ndarray | None = None) -> None:
        counts = _as_counts(freqs)
        sizes = [int(k) for k in codebook_sizes]
        if counts.shape[0] < len(sizes):
            raise BitstreamError(f"frequency table has {counts.shape[0]} stages but the stream uses n_q={len(sizes)}")
        if counts.shape[1] != max(sizes):
            raise BitstreamError(
                f"frequency table has {counts.shape[1]} codes per stage but the codebook size is {max(sizes)}"
            )
        self.codebook_sizes = sizes
        self.tables = [quantize_counts(counts[s, :k], k) for s, k in enumerate(sizes)]
        self.context_rows: list[int] = []
        ctx_tables: list[np.ndarray] = []
        if context is not None:
            ctx = np.asarray(context)
            if ctx.ndim != 3 or ctx.shape[1] != ctx.shape[2] or not np.issubdtype(ctx.dtype, np.integer):
                raise BitstreamError(f"context counts must be integer [rows, K, K], got shape {ctx.shape}")
            if ctx.size and ctx.min() < 0:
                raise BitstreamError("context counts are negative")
            for r in range(min(len(sizes), ctx.shape[0])):
                if sizes[r] <= ctx.shape[1] and ctx[r].any():
                    self.context_rows.append(r)
                    ctx_tables.append(context_table(ctx[r], counts[r], sizes[r]))
        # the context tables after the row's own (row 0, already among self.tables)
        crc_parts = [t.astype("<u4").tobytes() for t in self.tables] + [
            t[1:].astype("<u4").tobytes() for t in ctx_tables
        ]
        self.crc = zlib.crc32(b"".join(crc_parts))
        self._plain_rows = [r for r in range(len(sizes)) if r not in self.context_rows]
        self._models = {
            r: constriction.stream.model.Categorical(self.tables[r].astype(np.float64), perfect=False)
            for r in self._plain_rows
        }
        if self.context_rows:
            # probabilities [rows, previous symbol + 1, width]: index 0 is the chunk's first frame (no context)
            width = max(sizes[r] for r in self.context_rows)
            probs = np.zeros((len(self.context_rows), width + 1, width))
            for i, (r, table) in enumerate(zip(self.context_rows, ctx_tables, strict=True)):
                probs[i, : sizes[r] + 1, : sizes[r]] = table
            self._ctx_probs = probs / float(1 << TABLE_BITS)
            self._family = constriction.stream.model.Categorical(perfect=False)

    def _context_probs(self, previous: np.ndarray) -> np.ndarray:
        """previous: symbols + 1 `[..., context rows, channels]` (0: none) -> probabilities `[..., rows, channels,
        width]`."""
        rows = np.arange(len(self.context_rows))[:, None]
        return self._ctx_probs[rows, previous]

    def encode(self, codes: np.ndarray) -> bytes:
        """Range-code validated codes[C, n_q, F]; returns whole little-endian 32-bit words."""
        encoder = constriction.stream.queue.RangeEncoder()
        if self.context_rows and codes.shape[0] * codes.shape[2]:
            ctx = np.asarray(codes[:, self.context_rows, :], dtype=np.int64).transpose(2, 1, 0)  # [F, rows, C]
            previous = np.concatenate([np.zeros_like(ctx[:1]), ctx[:-1] + 1])
            probs = self._context_probs(previous)
            encoder.encode(
                np.ascontiguousarray(ctx, dtype=np.int32).reshape(-1), self._family, probs.reshape(-1, probs.shape[-1])
            )
        for s in self._plain_rows:
            stage = np.ascontiguousarray(codes[:, s, :], dtype=np.int32).reshape(-1)
            if stage.size:
                encoder.encode(stage, self._models[s])
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, channels: int, frames: int) -> np.ndarray:
        """Inverse of `encode`: int64 codes[channels, n_q, frames]; BitstreamError on invalid data.

        Only the exact bytes `encode` writes for the decoded codes are accepted: constriction's decoder
        reads trailing words, or the codes of a longer chunk, without complaint (`maybe_exhausted` is
        only a hint), so the codes are encoded again and compared. The payload must also be shorter
        than plain packing: a writer stores plain bits otherwise (docs/format.md)."""
        if len(payload) % 4:
            raise BitstreamError(f"entropy payload of {len(payload)} bytes is not whole 32-bit words")
        plain = packed_size(frames, channels, self.codebook_sizes)
        if payload and len(payload) >= plain:
            raise BitstreamError(
                f"range-coded payload of {len(payload)} bytes is not shorter than plain packing ({plain} bytes)"
            )
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        n = channels * frames
        codes = np.empty((channels, len(self.codebook_sizes), frames), dtype=np.int64)
        try:
            decoder = constriction.stream.queue.RangeDecoder(words)
            if self.context_rows and n:
                previous = np.zeros((len(self.context_rows), channels), dtype=np.int64)
                for t in range(frames):  # each frame's tables follow from the frame before
                    probs = self._context_probs(previous)
                    got = np.asarray(decoder.decode(self._family, probs.reshape(-1, probs.shape[-1])), dtype=np.int64)
                    previous = got.reshape(len(self.context_rows), channels) + 1
                    codes[:, self.context_rows, t] = (previous - 1).T
            for s in self._plain_rows:
                if n:
                    codes[:, s, :] = np.asarray(decoder.decode(self._models[s], n)).reshape(channels, frames)
            exhausted = decoder.maybe_exhausted()
        except Exception as exc:  # constriction signals invalid data with assorted exception types
            raise BitstreamError(f"entropy payload does not decode: {exc}") from None
        for r in self.context_rows:  # context tables are as wide as the widest context row
            if n and codes[:, r].max() >= self.codebook_sizes[r]:
                raise BitstreamError(f"entropy payload decodes to codes outside row {r}'s alphabet")
        if not exhausted or self.encode(codes) != bytes(payload):
            raise BitstreamError(
                "entropy payload has data left after the last code (trailing words or more frames than its record)"
            )
        return codes
