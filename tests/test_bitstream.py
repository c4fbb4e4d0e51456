"""Round trips, sizes, header handling and error messages of the `.rcq` format."""

from __future__ import annotations

import dataclasses
import io
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotcodec.bitstream import (
    VERSION,
    BitstreamError,
    CodingMode,
    RcqHeader,
    RcqReader,
    RcqWriter,
    UnsupportedVersionError,
    code_bits,
    decode_bytes,
    encode_bytes,
    estimate_frequencies,
    quantize_counts,
    read_rcq,
    write_rcq,
)
from rotcodec.bitstream.layout import StreamLayout

RECORD = 10
DATA = Path(__file__).parent / "data"


def make_header(sizes=(1024, 1024), channels=1, mode=0, chunk=16, model_id="rotcodec-16k-v1", **kw):
    fields = dict(
        model_id=model_id,
        model_hash=bytes(range(100, 116)),
        model_sample_rate=16000,
        original_sample_rate=44100,
        channels=channels,
        num_samples=12345,
        hop_length=320,
        codebook_sizes=tuple(sizes),
        coding_mode=mode,
        chunk_frames=chunk,
    )
    fields.update(kw)
    return RcqHeader(**fields)


def random_codes(rng, channels, sizes, frames):
    return np.stack([rng.integers(0, k, size=(channels, frames)) for k in sizes], axis=1)


def header_len(data: bytes) -> int:
    return struct.unpack_from("<H", data, 6)[0]


@st.composite
def stream_case(draw):
    n_q = draw(st.integers(1, 5))
    sizes = draw(
        st.lists(st.sampled_from([2, 3, 5, 7, 256, 1000, 1024, 4097, 65535, 65536]), min_size=n_q, max_size=n_q)
    )
    channels = draw(st.integers(1, 3))
    chunk = draw(st.integers(1, 9))
    frames = draw(st.sampled_from([0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, 3 * chunk + 2]))
    mode = draw(st.sampled_from([0, 1]))
    seed = draw(st.integers(0, 2**32 - 1))
    skew = draw(st.booleans())
    return sizes, channels, chunk, max(frames, 0), mode, seed, skew


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_case())
def test_round_trip_property(case):
    sizes, channels, chunk, frames, mode, seed, skew = case
    rng = np.random.default_rng(seed)
    header = make_header(sizes, channels, mode, chunk)
    codes = random_codes(rng, channels, sizes, frames)
    freqs = None
    if mode == CodingMode.ENTROPY:
        # skewed tables trained on other data: many codes in `codes` have zero count
        train = np.minimum(rng.geometric(0.3, size=(1, len(sizes), 50)) - 1, min(sizes) - 1)
        freqs = estimate_frequencies([train], sizes) if skew else rng.integers(0, 5, (len(sizes), max(sizes)))
    data = encode_bytes(header, codes, freqs)
    got_header, got = decode_bytes(data, freqs)
    assert got_header == header
    assert got.dtype == np.int64 and got.shape == (channels, len(sizes), frames)
    np.testing.assert_array_equal(got, codes)
    if mode == CodingMode.ENTROPY:  # chunks fall back to plain packing: never larger than the plain stream
        assert len(data) <= len(encode_bytes(make_header(sizes, channels, CodingMode.PLAIN, chunk), codes))

    reader = RcqReader(io.BytesIO(data), freqs)
    lengths = [c.shape[2] for c in reader]
    assert sum(lengths) == frames == reader.total_frames
    assert all(n == chunk for n in lengths[:-1]) and all(0 < n <= chunk for n in lengths)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=0, max_size=6), st.sampled_from([0, 1]))
def test_streaming_writes_give_identical_bytes(splits, mode):
    sizes = (1000, 37)
    rng = np.random.default_rng(len(splits))
    codes = random_codes(rng, 2, sizes, sum(splits))
    header = make_header(sizes, channels=2, mode=mode, chunk=5)
    freqs = estimate_frequencies([codes], sizes) + 1
    buf = io.BytesIO()
    writer = RcqWriter(buf, header, freqs)
    start = 0
    for n in splits:
        writer.write_chunk(codes[:, :, start : start + n])
        start += n
    writer.close()
    assert buf.getvalue() == encode_bytes(header, codes, freqs)


def test_entropy_chunks_fall_back_to_plain_packing_per_chunk():
    sizes = (1024, 1024)
    rng = np.random.default_rng(3)
    typical = np.minimum(rng.geometric(0.05, size=(1, 2, 400)) - 1, 1023)  # what the tables were fit on
    freqs = estimate_frequencies([typical], sizes)
    odd = rng.integers(0, 1024, size=(1, 2, 16))  # uniform codes: range coding would cost > 10 bits each
    header = make_header(sizes, mode=CodingMode.ENTROPY, chunk=16)
    plain_chunk = math.ceil(16 * 2 * 10 / 8)
    for codes, stored_plain in ((typical[:, :, :16], False), (odd, True)):
        data = encode_bytes(header, codes, freqs)
        payload = struct.unpack_from("<HII", data, header_len(data))[1]
        assert (payload == plain_chunk) == stored_plain
        assert payload <= plain_chunk
        np.testing.assert_array_equal(decode_bytes(data, freqs)[1], codes)
    mixed = np.concatenate([typical[:, :, :16], odd, typical[:, :, 16:32]], axis=2)
    got_header, got = decode_bytes(encode_bytes(header, mixed, freqs), freqs)
    np.testing.assert_array_equal(got, mixed)
    assert got_header.format_version == VERSION


def test_older_versions_are_refused_with_a_re_encode_message():
    """Versions 1 and 2 did not store which rows were pitch, band gains or stages: they are refused by name."""
    data = (DATA / "entropy_v1.rcq").read_bytes()
    assert data[4] == 1
    with pytest.raises(UnsupportedVersionError, match="older rotcodec.*re-encode"):
        decode_bytes(data, np.ones((3, 1024), np.int64))


def test_header_stores_the_layout_explicitly():
    header = RcqHeader(
        model_id="m",
        model_hash=b"h" * 16,
        model_sample_rate=16000,
        original_sample_rate=16000,
        channels=1,
        num_samples=320,
        hop_length=320,
        codebook_sizes=(128, 5, 5, 5, 1024, 1024),
        pitch_rows=1,
        envelope_tier=2,
        envelope_rows=3,
    )
    got = decode_bytes(encode_bytes(header, np.zeros((1, 6, 1), np.int64)))[0]
    assert got == header and got.layout == StreamLayout(2, 2, 1, 3) and got.rows == 6 and got.n_q == 2
    for bad in ({"envelope_tier": None}, {"envelope_rows": 0}, {"pitch_rows": 3, "envelope_rows": 3}):
        with pytest.raises(BitstreamError):
            dataclasses.replace(header, **bad)
    # a last stage with a smaller alphabet than the stage before it is trimmed; a lone stage needs the model
    trimmed = dataclasses.replace(header, codebook_sizes=(128, 5, 5, 5, 1024, 37))
    assert trimmed.layout == StreamLayout(2, 2, 1, 3, last_codes=37)
    assert trimmed.layout.describe() == "n_q 2 (last of 37 codes) + pitch + 3 band gains (tier 2)"
    lone = dataclasses.replace(header, codebook_sizes=(128, 5, 5, 5, 37))
    assert lone.layout == StreamLayout(1, 2, 1, 3)


class OneByteAtATime(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(min(n, 1) if n >= 0 else 1)


def test_reader_handles_short_reads():
    rng = np.random.default_rng(1)
    header = make_header((300, 300), chunk=4)
    codes = random_codes(rng, 1, (300, 300), 10)
    reader = RcqReader(OneByteAtATime(encode_bytes(header, codes)))
    np.testing.assert_array_equal(reader.read_all(), codes)


def test_header_fields_and_model_hash_round_trip():
    h = make_header(
        (1024, 512, 3),
        channels=2,
        mode=1,
        chunk=75,
        model_id="modèle-β",
        num_samples=2**40 + 7,
        model_hash=bytes(range(16)),
        hop_length=441,
        model_sample_rate=44100,
        original_sample_rate=8000,
    )
    freqs = np.ones((4, 1024), dtype=np.int64)
    got, codes = decode_bytes(encode_bytes(h, np.zeros((2, 3, 0), dtype=np.int64), freqs), freqs)
    assert got == h and got.model_hash == bytes(range(16)) and got.model_id == "modèle-β"
    assert codes.shape == (2, 3, 0)
    assert got.frame_rate == pytest.approx(100.0)


@pytest.mark.parametrize("k", [2, 3, 1000, 1024, 1025, 65536])
def test_plain_payload_is_exactly_ceil_log2_bits(k):
    frames, channels, n_q = 97, 2, 3
    header = make_header((k,) * n_q, channels=channels, chunk=frames)
    codes = random_codes(np.random.default_rng(k), channels, (k,) * n_q, frames)
    data = encode_bytes(header, codes)
    payload_bits = (len(data) - header_len(data) - 2 * RECORD) * 8
    exact = frames * n_q * channels * math.ceil(math.log2(k))
    assert code_bits(k) == math.ceil(math.log2(k))
    assert exact <= payload_bits < exact + 8
    assert header_len(data) < 100


def test_compact_overhead_per_chunk():
    sizes = (1024,) * 8
    header = make_header(sizes, chunk=10)
    codes = random_codes(np.random.default_rng(0), 1, sizes, 1000)
    data = encode_bytes(header, codes)
    assert len(data) == header_len(data) + 100 * (RECORD + 100) + RECORD
    assert header.plain_kbps == pytest.approx(50 * 80 / 1000)


def test_entropy_mode_beats_plain_on_skewed_codes():
    rng = np.random.default_rng(0)
    sizes = (1024,) * 4
    codes = np.minimum(rng.geometric(0.05, size=(1, 4, 2000)) - 1, 1023)
    freqs = estimate_frequencies([codes[:, :, :1000]], sizes)
    plain = encode_bytes(make_header(sizes, mode=0, chunk=50), codes)
    coded = encode_bytes(make_header(sizes, mode=1, chunk=50), codes, freqs)
    assert len(coded) < 0.7 * len(plain)
    np.testing.assert_array_equal(decode_bytes(coded, freqs)[1], codes)


def test_entropy_mode_codes_unseen_codes_losslessly():
    sizes = (65536, 2)
    freqs = np.zeros((2, 65536), dtype=np.int64)
    freqs[0, 0] = 10**18  # every other code of stage 0 has zero count, counts overflow-sized
    freqs[1, 0] = 5
    codes = np.array([[[65535, 1, 0, 12345], [1, 1, 0, 1]]])
    header = make_header(sizes, mode=1, chunk=3)
    np.testing.assert_array_equal(decode_bytes(encode_bytes(header, codes, freqs), freqs)[1], codes)


def test_estimate_and_quantize_tables():
    codes = np.array([[[0, 0, 2, 2, 2], [1, 1, 1, 1, 0]]])
    counts = estimate_frequencies([codes, codes[0]], (3, 2))
    np.testing.assert_array_equal(counts, [[4, 0, 6], [2, 8, 0]])
    table = quantize_counts(counts[0], 3)
    assert table.sum() == 2**24 and table.min() >= 1 and table[2] > table[0] > table[1]
    assert quantize_counts(np.zeros(5, dtype=np.int64), 5).tolist() == [2**24 // 5 + 1] + [2**24 // 5] * 4
    with pytest.raises(BitstreamError):
        estimate_frequencies([np.array([[[3]]])], (3,))


def test_freq_table_mismatches_are_clear_errors():
    sizes = (16, 16)
    codes = random_codes(np.random.default_rng(0), 1, sizes, 20)
    freqs = estimate_frequencies([codes], sizes)
    data = encode_bytes(make_header(sizes, mode=1), codes, freqs)
    with pytest.raises(BitstreamError, match="n_q=2"):
        decode_bytes(data, freqs[:1])
    with pytest.raises(BitstreamError, match="codebook size"):
        decode_bytes(data, np.ones((2, 32)))
    with pytest.raises(BitstreamError, match="do not match"):
        decode_bytes(data, freqs + 1)
    with pytest.raises(BitstreamError, match="frequency tables"):
        decode_bytes(data)
    with pytest.raises(BitstreamError, match="finite"):
        encode_bytes(make_header(sizes, mode=1), codes, np.full((2, 16), 0.5))
    np.testing.assert_array_equal(decode_bytes(data, np.vstack([freqs, freqs]))[1], codes)


def test_invalid_codes_are_refused_and_inputs_untouched():
    header = make_header((10, 10), channels=1)
    good = np.array([[[1, 2], [3, 4]]], dtype=np.int32)
    before = good.copy()
    decode = decode_bytes(encode_bytes(header, good))[1]
    assert decode.dtype == np.int64 and (good == before).all()
    for bad, msg in [
        (good.astype(np.float32), "integers"),
        (good[0], "shaped"),
        (np.array([[[1, -1], [3, 4]]]), "non-negative"),
        (np.array([[[1, 2], [3, 10]]]), "stage 1"),
    ]:
        with pytest.raises(BitstreamError, match=msg):
            encode_bytes(header, bad)


@pytest.mark.parametrize(
    "kw",
    [
        dict(channels=0),
        dict(sizes=(1,)),
        dict(sizes=(2**16 + 1,)),
        dict(sizes=()),
        dict(chunk=0),
        dict(model_sample_rate=0),
        dict(model_hash=b"short"),
        dict(model_id="x" * 256),
        dict(mode=2),
        dict(channels=256, sizes=(2,) * 255, chunk=100),
        dict(hop_length=0),
        dict(num_samples=-1),
    ],
)
def test_absurd_headers_are_refused_by_writer(kw):
    with pytest.raises(BitstreamError):
        make_header(**kw)


def test_atomic_file_helpers(tmp_path):
    header = make_header((1000,), channels=2, mode=1)
    codes = random_codes(np.random.default_rng(5), 2, (1000,), 33)
    freqs = estimate_frequencies([codes], (1000,))
    path = tmp_path / "clip.rcq"
    write_rcq(path, header, codes, freqs)
    got_header, got = read_rcq(path, freqs)
    assert got_header == header and np.array_equal(got, codes)
    with pytest.raises(BitstreamError):
        write_rcq(path, header, codes[:, :, :5] + 5000, freqs)
    assert read_rcq(path, freqs)[0] == header  # the failed write left the old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.rcq"]


def test_header_accepts_numpy_ints_and_refuses_floats():
    h = make_header(np.array([1024, 7]), channels=np.int64(2), mode=CodingMode.ENTROPY, chunk=np.uint16(9))
    assert h.codebook_sizes == (1024, 7) and type(h.channels) is int and h.coding_mode == 1
    assert h.bits_per_frame == 2 * (10 + 3)
    with pytest.raises(BitstreamError, match="hop_length must be an int"):
        make_header(hop_length=320.0)
    with pytest.raises(BitstreamError, match="channels must be an int"):
        make_header(channels=True)


def test_format_doc_header_table_matches_the_writer():
    """Every fixed integer field in docs/format.md's header table sits where the writer puts it, and the
    doc's typical header (pitch, 48 band gains, 9 stages, 9-byte id) has the size it states."""
    import re

    doc = (Path(__file__).parent.parent / "docs" / "format.md").read_text()
    sizes = (128, *[13] * 48, *[1024] * 9)
    header = RcqHeader(
        model_id="speech16k",
        model_hash=bytes(range(16)),
        model_sample_rate=16000,
        original_sample_rate=44100,
        channels=2,
        num_samples=123457,
        hop_length=320,
        codebook_sizes=sizes,
        coding_mode=CodingMode.ENTROPY,
        chunk_frames=77,
        pitch_rows=1,
        envelope_tier=4,
        envelope_rows=48,
    )
    data = encode_bytes(header, np.zeros((2, len(sizes), 0), np.int64), np.ones((len(sizes), 1024), np.int64))
    expected = {
        "version": VERSION,
        "coding_mode": 1,
        "header_len": 186,
        "model_sample_rate": 16000,
        "original_sample_rate": 44100,
        "num_samples": 123457,
        "hop_length": 320,
        "channels": 2,
        "chunk_frames": 77,
        "rows": len(sizes),
        "id_len": 9,
        "pitch_rows": 1,
        "envelope_tier": 4,
        "envelope_rows": 48,
    }
    kinds = {"u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q"}
    found = {}
    for off, size, kind, name in re.findall(r"^\| (\d+) \| (\d+) \| (u\d+) \| (\w+) \|", doc, re.M):
        assert struct.calcsize(kinds[kind]) == int(size), name
        found[name] = struct.unpack_from(kinds[kind], data, int(off))[0]
    assert found.items() >= expected.items() and set(expected) <= set(found)
    assert "is 186 bytes" in doc


def test_layout_tells_phase_rows_from_band_gains() -> None:
    lay = StreamLayout(n_q=8, envelope=8, pitch_rows=1, envelope_rows=56)
    assert lay.describe() == "n_q 8 + pitch + 56 band gains (tier 8)"
    assert lay.describe(8) == "n_q 8 + pitch + 48 band gains + 8 harmonic phases (tier 8)"


def test_version_4_files_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 5 only adds the skip code's share of a trimmed stage's table (docs/format.md), which no
    version-4 file's model had, so version-4 files decode as they did."""
    import rotcodec.bitstream.header as header_module

    rng = np.random.default_rng(3)
    codes = np.stack([rng.integers(0, k, (1, 50)) for k in (1024, 1024, 40)], axis=1)
    freqs = np.ones((3, 1024), np.int64)
    with monkeypatch.context() as m:
        m.setattr(header_module, "VERSION", 4)  # a writer of version 4
        data = encode_bytes(make_header(sizes=(1024, 1024, 40), mode=1, format_version=4), codes, freqs)
    assert data[4] == 4 and VERSION == 6
    got_header, got = decode_bytes(data, freqs)
    assert got_header.format_version == 4
    np.testing.assert_array_equal(got, codes)
