"""The `.rcq` file header: fields, limits, and its byte layout (see docs/format.md for the table).

Layout (little-endian), versions 4 and 5 (5 adds the skip code's share of a trimmed stage's table,
docs/format.md)::

    0  4s  magic b"\\x89RCQ"       4  u8  version        5  u8  coding_mode   6  u16 header_len
    8  u32 model_sample_rate      12  u32 original_sample_rate               16  u64 num_samples
    24 u32 hop_length             28  u16 channels      30  u16 chunk_frames  32  u8  rows
    33 u8  model_id_len           34  16s model_hash    50  u32 table_crc
    54 u8  pitch_rows             55  u8  envelope_tier (255: none)          56  u8  envelope_rows
    57 u16[rows] alphabet size - 1, then model_id (UTF-8), then u32 CRC32 of all preceding header bytes.

The rows of each frame are `pitch_rows` pitch symbols, `envelope_rows` band gains of the model's envelope
tier `envelope_tier`, then the RVQ stages (`StreamLayout`). Versions 1 and 2 did not say which rows were
which, and version 3 fingerprinted the weights file instead of the model; this reader refuses them (re-encode
with this version).
"""

from __future__ import annotations

import enum
import operator
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from rotcodec.bitstream.errors import BitstreamError, UnsupportedVersionError
from rotcodec.bitstream.layout import StreamLayout
from rotcodec.bitstream.packing import code_bits

MAGIC = b"\x89RCQ"
VERSION = 6  # the version written
CONTEXT_VERSION = 6  # the first whose entropy payloads code side rows after the previous frame (`entropy.py`)
OLDEST_READ = 4  # version 4 differs only in trimmed stages of models with a skip code, which it never had
NO_ENVELOPE = 255  # envelope_tier byte of a stream without band gains
HASH_BYTES = 16

MAX_SAMPLE_RATE = 1_000_000
MAX_CHANNELS = 256
MAX_HOP = 1 << 20
MAX_STAGES = 255
MIN_CODEBOOK, MAX_CODEBOOK = 2, 1 << 16
MAX_CHUNK_FRAMES = 0xFFFF
MAX_CHUNK_CODES = 1 << 22  # bounds one chunk's int64 buffer (32 MiB) whatever the header claims
MAX_ID_BYTES = 255

_FIXED = struct.Struct("<4sBBHIIQIHHBB16sIBBB")
_PREFIX = 8  # magic, version, coding_mode, header_len: enough to decide whether to read on
_CRC = struct.Struct("<I")
MIN_HEADER_LEN = _FIXED.size + 2 + _CRC.size
MAX_HEADER_LEN = _FIXED.size + 2 * MAX_STAGES + MAX_ID_BYTES + _CRC.size


class CodingMode(enum.IntEnum):
    """How chunk payloads store codes."""

    PLAIN = 0  # ceil(log2 K) bits per code
    ENTROPY = 1  # range coded with per-stage frequency tables shipped with the model


_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_text(text: str) -> str:
    """`text` made safe to print on one terminal line, e.g. a model id read from a header.

    Header strings come from files anyone can write: printed raw, a model id could move the cursor,
    recolour the terminal or fake extra output lines. Every character that `str.isprintable` refuses
    (C0/C1 controls, DEL, line and paragraph separators, bidi and other format characters, spaces other
    than ' ', surrogates, unassigned code points) becomes a Python-style escape (`\\n`, `\\x1b`, `\\u202e`),
    and a backslash becomes `\\\\`, so the escaped form is unambiguous. Printable text, accents and CJK
    included, is kept as it is."""
    out = []
    for ch in str(text):
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _as_int(name: str, value: object, lo: int, hi: int) -> int:
    """`value` as a Python int within [lo, hi] (numpy integers accepted, bools and floats refused)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise BitstreamError(f"header field {name} must be an int, got {type(value).__name__}") from None
    if not lo <= number <= hi:
        raise BitstreamError(f"header field {name}={number} is outside [{lo}, {hi}]")
    return number


@dataclass(frozen=True)
class RcqHeader:
    """Everything a decoder needs besides the model weights and the codes.

    model_id: model name (UTF-8, at most 255 bytes); model_hash: 16 bytes, the model's fingerprint
    (the first 16 bytes of its content hash, `rotcodec.models.model_hash`).
    model_sample_rate / original_sample_rate: Hz; the decoder resamples back to the original rate.
    channels: audio channels, each coded separately; num_samples: length at the original rate.
    hop_length: model-rate samples per frame (frame rate = model_sample_rate / hop_length Hz).
    codebook_sizes: the alphabet size of every code row stored (rows = its length, 2 <= K <= 65536).
    pitch_rows, envelope_tier (None: no band gains), envelope_rows: which rows come before the RVQ stages
    (see `layout`). coding_mode: 0 plain bit packing, 1 entropy coded. chunk_frames: frames per chunk.
    format_version: the version a parsed header was read from (writers always write `VERSION`).
    """

    model_id: str
    model_hash: bytes
    model_sample_rate: int
    original_sample_rate: int
    channels: int
    num_samples: int
    hop_length: int
    codebook_sizes: tuple[int, ...]
    coding_mode: int = CodingMode.PLAIN
    chunk_frames: int = 64
    pitch_rows: int = 0
    envelope_tier: int | None = None
    envelope_rows: int = 0
    format_version: int = field(default=VERSION, compare=False)

    def __post_init__(self) -> None:
        def put(name: str, lo: int, hi: int) -> None:
            object.__setattr__(self, name, _as_int(name, getattr(self, name), lo, hi))

        try:
            raw_sizes = tuple(self.codebook_sizes)
        except TypeError:
            raise BitstreamError("codebook_sizes must be a sequence of ints") from None
        _as_int("rows", len(raw_sizes), 1, MAX_STAGES)
        sizes = tuple(_as_int(f"codebook_sizes[{s}]", k, MIN_CODEBOOK, MAX_CODEBOOK) for s, k in enumerate(raw_sizes))
        object.__setattr__(self, "codebook_sizes", sizes)
        if not isinstance(self.model_id, str):
            raise BitstreamError("model_id must be a str")
        try:
            id_len = len(self.model_id.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise BitstreamError(f"model_id is not encodable as UTF-8: {exc.reason}") from None
        if id_len > MAX_ID_BYTES:
            raise BitstreamError(f"model_id is {id_len} bytes in UTF-8, the format allows {MAX_ID_BYTES}")
        if not isinstance(self.model_hash, bytes) or len(self.model_hash) != HASH_BYTES:
            raise BitstreamError(f"model_hash must be exactly {HASH_BYTES} bytes")
        put("model_sample_rate", 1, MAX_SAMPLE_RATE)
        put("original_sample_rate", 1, MAX_SAMPLE_RATE)
        put("channels", 1, MAX_CHANNELS)
        put("num_samples", 0, (1 << 64) - 1)
        put("hop_length", 1, MAX_HOP)
        put("coding_mode", 0, len(CodingMode) - 1)
        put("chunk_frames", 1, MAX_CHUNK_FRAMES)
        put("format_version", OLDEST_READ, VERSION)
        put("pitch_rows", 0, len(sizes) - 1)
        put("envelope_rows", 0, len(sizes) - 1 - self.pitch_rows)
        if self.envelope_tier is not None:
            put("envelope_tier", 0, NO_ENVELOPE - 1)
        if (self.envelope_tier is None) != (self.envelope_rows == 0):
            raise BitstreamError(f"envelope_tier {self.envelope_tier} with {self.envelope_rows} envelope rows")
        codes = self.channels * len(sizes) * self.chunk_frames
        if codes > MAX_CHUNK_CODES:
            raise BitstreamError(
                f"channels*n_q*chunk_frames = {codes} codes per chunk exceeds the limit {MAX_CHUNK_CODES}"
            )

    @property
    def rows(self) -> int:
        """Code rows per channel and frame: side rows and RVQ stages."""
        return len(self.codebook_sizes)

    @property
    def n_q(self) -> int:
        """RVQ stages stored in the file."""
        return self.rows - self.pitch_rows - self.envelope_rows

    @property
    def layout(self) -> StreamLayout:
        """The stream's rows as a `StreamLayout`; a last stage with a smaller alphabet than the stage before it
        is trimmed. Whether a lone stage is trimmed depends on the model's codebook size:
        `CodecModel.layout_of` decides that too."""
        sizes = self.codebook_sizes
        last = sizes[-1] if self.n_q >= 2 and sizes[-1] < sizes[-2] else None
        return StreamLayout(self.n_q, self.envelope_tier, self.pitch_rows, self.envelope_rows, last)

    @property
    def frame_rate(self) -> float:
        """Code frames per second (Hz)."""
        return self.model_sample_rate / self.hop_length

    @property
    def bits_per_frame(self) -> int:
        """Plain-mode bits for one frame of all channels and stages."""
        return self.channels * sum(code_bits(k) for k in self.codebook_sizes)

    @property
    def plain_kbps(self) -> float:
        """Plain-mode payload bitrate in kbps (chunk and header overhead excluded)."""
        return self.frame_rate * self.bits_per_frame / 1000.0


def pack_header(header: RcqHeader, table_crc: int) -> bytes:
    """Serialize `header`; `table_crc` fingerprints the entropy tables (0 in plain mode)."""
    model_id = header.model_id.encode("utf-8")
    length = _FIXED.size + 2 * header.rows + len(model_id) + _CRC.size
    fixed = _FIXED.pack(
        MAGIC,
        VERSION,
        header.coding_mode,
        length,
        header.model_sample_rate,
        header.original_sample_rate,
        header.num_samples,
        header.hop_length,
        header.channels,
        header.chunk_frames,
        header.rows,
        len(model_id),
        header.model_hash,
        table_crc,
        header.pitch_rows,
        NO_ENVELOPE if header.envelope_tier is None else header.envelope_tier,
        header.envelope_rows,
    )
    body = fixed + struct.pack(f"<{header.rows}H", *(k - 1 for k in header.codebook_sizes)) + model_id
    return body + _CRC.pack(zlib.crc32(body))


def read_header(read: Callable[[int], bytes]) -> tuple[RcqHeader, int, int]:
    """Parse a header through `read(n)` (returns at most n bytes; fewer only at end of input).

    Returns (header, table_crc, header_crc). Raises BitstreamError on anything malformed and
    UnsupportedVersionError for files from a newer format version.
    """
    prefix = read(_PREFIX)
    if not prefix:
        raise BitstreamError("empty input: not an .rcq file")
    if prefix[:4] != MAGIC[: len(prefix[:4])]:
        raise BitstreamError("not an .rcq file (bad magic bytes)")
    if len(prefix) < _PREFIX:
        raise BitstreamError(f"truncated .rcq header: {len(prefix)} bytes")
    version, _mode, length = struct.unpack("<BBH", prefix[4:])
    if version > VERSION:
        raise UnsupportedVersionError(
            f".rcq format version {version} is newer than this reader (supports up to {VERSION}); upgrade rotcodec"
        )
    if version < 1:
        raise BitstreamError(f"invalid .rcq format version {version}")
    if version < OLDEST_READ:
        raise UnsupportedVersionError(
            f".rcq format version {version} was written by an older rotcodec and is no longer read; re-encode it"
        )
    if not MIN_HEADER_LEN <= length <= MAX_HEADER_LEN:
        raise BitstreamError(f"corrupt .rcq header: header length {length} is impossible")
    rest = read(length - _PREFIX)
    if len(rest) < length - _PREFIX:
        raise BitstreamError(f"truncated .rcq header: {_PREFIX + len(rest)} of {length} bytes")
    raw = prefix + rest
    (stored_crc,) = _CRC.unpack_from(raw, length - _CRC.size)
    header_crc = zlib.crc32(raw[: -_CRC.size])
    if stored_crc != header_crc:
        raise BitstreamError("corrupt .rcq header: CRC mismatch")
    fields = _FIXED.unpack_from(raw)
    (_, _, mode, _, model_sr, orig_sr, n_samples, hop, channels, chunk, rows, id_len, mhash, table_crc) = fields[:14]
    pitch_rows, tier, envelope_rows = fields[14:]
    if length != _FIXED.size + 2 * rows + id_len + _CRC.size:
        raise BitstreamError("corrupt .rcq header: length does not match the row count and model id size")
    sizes = struct.unpack_from(f"<{rows}H", raw, _FIXED.size)
    id_start = _FIXED.size + 2 * rows
    try:
        model_id = raw[id_start : id_start + id_len].decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError("corrupt .rcq header: model id is not valid UTF-8") from None
    header = RcqHeader(
        model_id=model_id,
        model_hash=mhash,
        model_sample_rate=model_sr,
        original_sample_rate=orig_sr,
        channels=channels,
        num_samples=n_samples,
        hop_length=hop,
        codebook_sizes=tuple(k + 1 for k in sizes),
        coding_mode=mode,
        chunk_frames=chunk,
        pitch_rows=pitch_rows,
        envelope_tier=None if tier == NO_ENVELOPE else tier,
        envelope_rows=envelope_rows,
        format_version=version,
    )
    return header, table_crc, header_crc
