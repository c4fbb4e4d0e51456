"""The `.rcq` compressed-file format (spec: docs/format.md).

A file is a header (magic b"\\x89RCQ", version, model id + 16-byte weights hash, sample rates, channels,
sample count, hop length, per-stage codebook sizes, coding mode, chunk size, CRC32), then chunks of RVQ
codes [channels, n_q, frames] (10-byte record + payload, each CRC32-checked), then an end record holding
the total frame count. Payloads are either plain bit packing (ceil(log2 K) bits per code) or range coded
with per-stage frequency tables that ship with the model. Readers refuse newer versions; any malformed
input raises BitstreamError (a ValueError).
"""

from rotcodec.bitstream.entropy import EntropyTables, estimate_frequencies, quantize_counts
from rotcodec.bitstream.errors import BitstreamError, UnsupportedVersionError
from rotcodec.bitstream.format import RcqReader, RcqWriter, decode_bytes, encode_bytes, read_rcq, write_rcq
from rotcodec.bitstream.header import MAGIC, VERSION, CodingMode, RcqHeader
from rotcodec.bitstream.packing import code_bits, pack_codes, unpack_codes

__all__ = [
    "MAGIC",
    "VERSION",
    "BitstreamError",
    "CodingMode",
    "EntropyTables",
    "RcqHeader",
    "RcqReader",
    "RcqWriter",
    "UnsupportedVersionError",
    "code_bits",
    "decode_bytes",
    "encode_bytes",
    "estimate_frequencies",
    "pack_codes",
    "quantize_counts",
    "read_rcq",
    "unpack_codes",
    "write_rcq",
]
