"""Malformed `.rcq` input: every one must raise BitstreamError (a one-line message) and nothing else."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.bitstream import (
    MAGIC,
    BitstreamError,
    EntropyTables,
    RcqHeader,
    RcqWriter,
    UnsupportedVersionError,
    decode_bytes,
    encode_bytes,
    estimate_frequencies,
    unpack_codes,
)
from rotcodec.bitstream.header import _FIXED
from rotcodec.bitstream.packing import packed_size


def valid_file(mode: int, sizes=(1000, 7, 2), channels=2, frames=11, chunk=4, seed=0):
    rng = np.random.default_rng(seed)
    header = RcqHeader(
        model_id="fuzz",
        model_hash=bytes(range(16)),
        model_sample_rate=24000,
        original_sample_rate=48000,
        channels=channels,
        num_samples=frames * 640,
        hop_length=320,
        codebook_sizes=sizes,
        coding_mode=mode,
        chunk_frames=chunk,
    )
    codes = np.stack([rng.integers(0, k, size=(channels, frames)) for k in sizes], axis=1)
    freqs = estimate_frequencies([codes], sizes) if mode else None
    return encode_bytes(header, codes, freqs), header, codes, freqs


FILES = {mode: valid_file(mode) for mode in (0, 1)}
FILES[2] = valid_file(1, sizes=(65536, 1024, 3), channels=1, frames=9, chunk=5, seed=1)


def must_fail(data: bytes, freqs) -> BitstreamError:
    with pytest.raises(BitstreamError) as info:
        decode_bytes(data, freqs)
    assert "\n" not in str(info.value) and str(info.value)
    return info.value


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_every_truncation_is_detected(mode):
    data, _, _, freqs = FILES[mode]
    for end in range(len(data)):
        must_fail(data[:end], freqs)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_every_single_bit_flip_is_detected(mode):
    data, _, _, freqs = FILES[mode]
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        must_fail(bytes(flipped), freqs)


def header_len(data: bytes) -> int:
    return int.from_bytes(data[6:8], "little")


def header_of(mode: int) -> bytes:
    data = FILES[mode][0]
    return data[: header_len(data)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_bitstream_error(blob):
    inputs = [(blob, None), (MAGIC + blob, None), (MAGIC + b"\x01" + blob, None)]
    inputs += [(header_of(mode) + blob, FILES[mode][3]) for mode in (0, 1)]  # garbage chunk records
    for data, freqs in inputs:
        try:
            decode_bytes(data, freqs)
        except BitstreamError:
            pass


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from([0, 1]),
    sizes=st.lists(st.sampled_from([2, 3, 100, 1024, 65536]), min_size=1, max_size=3),
    frames=st.integers(0, 20),
    chunk=st.integers(1, 6),
    seed=st.integers(0, 1000),
    data=st.data(),
)
def test_random_corruptions_of_random_files(mode, sizes, frames, chunk, seed, data):
    blob, _, codes, freqs = valid_file(mode, tuple(sizes), channels=1, frames=frames, chunk=chunk, seed=seed)
    corrupted = bytearray(blob)
    start = data.draw(st.integers(0, len(blob) - 1))
    length = data.draw(st.integers(1, 8))
    patch = data.draw(st.binary(min_size=length, max_size=length))
    corrupted[start : start + length] = patch
    try:
        _, got = decode_bytes(bytes(corrupted), freqs)
    except BitstreamError:
        return
    # only an overwrite with identical bytes (or an astronomically unlikely CRC collision) may pass
    assert bytes(corrupted) == blob
    np.testing.assert_array_equal(got, codes)


@pytest.mark.parametrize("mode", [0, 1])
def test_huge_claimed_payload_is_refused_before_reading(mode):
    data, _, _, freqs = FILES[mode]
    first_record = header_len(data)
    huge = bytearray(data)
    huge[first_record + 2 : first_record + 6] = (0xFFFFFFFF).to_bytes(4, "little")
    assert "payload size" in str(must_fail(bytes(huge), freqs))


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=64),
    sizes=st.lists(st.sampled_from([2, 3, 100, 1024, 65536]), min_size=1, max_size=3),
    frames=st.integers(0, 8),
    skewed=st.booleans(),
)
def test_payload_decoders_behind_the_crc_are_safe(payload, sizes, frames, skewed):
    # the CRC normally stops garbage first; the payload decoders must still never crash or return junk
    counts = np.ones((len(sizes), max(sizes)), dtype=np.int64)
    if skewed:
        counts[:, 0] = 10**6
    tables = EntropyTables(counts, sizes)
    for decode in (
        lambda: unpack_codes(payload, 2, frames, sizes),
        lambda: tables.decode(payload, 2, frames),
    ):
        try:
            codes = decode()
        except BitstreamError:
            continue
        assert codes.shape == (2, len(sizes), frames) and codes.dtype == np.int64
        assert all(((codes[:, s] >= 0) & (codes[:, s] < k)).all() for s, k in enumerate(sizes))


def raw_header(channels=1, sizes=(1024,), chunk=16, version=4, mode=0, table_crc=0, model_id=b"m", side=(0, 255, 0)):
    rows = len(sizes)
    length = _FIXED.size + 2 * rows + len(model_id) + 4
    body = _FIXED.pack(
        MAGIC,
        version,
        mode,
        length,
        16000,
        16000,
        0,
        320,
        channels,
        chunk,
        rows,
        len(model_id),
        bytes(16),
        table_crc,
        *side,
    )
    body += struct.pack(f"<{rows}H", *(k - 1 for k in sizes)) + model_id
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(channels=0), "channels"),
        (dict(sizes=(1,)), "codebook_sizes"),
        (dict(sizes=()), "header length"),
        (dict(chunk=0), "chunk_frames"),
        (dict(channels=1000, sizes=(65536,) * 200, chunk=65535), "channels"),
        (dict(channels=200, sizes=(65536,) * 200, chunk=65535), "per chunk"),
        (dict(mode=7), "coding_mode"),
        (dict(model_id=b"\xff\xfe"), "UTF-8"),
        (dict(table_crc=5), "entropy table CRC"),
        (dict(sizes=(5, 1024), side=(2, 255, 0)), "pitch_rows"),
        (dict(sizes=(5, 1024), side=(0, 0, 2)), "envelope_rows"),
        (dict(sizes=(5, 1024), side=(0, 255, 1)), "envelope_tier"),
        (dict(version=2), "older rotcodec"),
    ],
)
def test_absurd_headers_are_refused_by_reader(kw, msg):
    data = raw_header(**kw)
    with pytest.raises(BitstreamError, match=msg):
        decode_bytes(data)


def test_newer_version_is_a_clear_error():
    data = bytearray(FILES[0][0])
    data[4] = 7
    with pytest.raises(UnsupportedVersionError, match=r"version 7 is newer.*up to 6.*upgrade"):
        decode_bytes(bytes(data))
    assert issubclass(UnsupportedVersionError, BitstreamError) and issubclass(BitstreamError, ValueError)


@pytest.mark.parametrize(
    "data, msg",
    [
        (b"", "empty"),
        (b"Hello, this is a text file\n" * 3, "magic"),
        ("a str".encode("utf-16"), "magic"),
        (MAGIC + b"\x01", "truncated"),
    ],
)
def test_non_rcq_inputs(data, msg):
    with pytest.raises(BitstreamError, match=msg):
        decode_bytes(data)
    with pytest.raises(BitstreamError):
        decode_bytes("text")  # type: ignore[arg-type]


def test_reordered_chunks_trailing_bytes_and_unfinished_writer():
    data, header, codes, _ = valid_file(0, sizes=(256,), channels=1, frames=12, chunk=4)
    h, rec = header_len(data), 10 + 4
    swapped = data[:h] + data[h + rec : h + 2 * rec] + data[h : h + rec] + data[h + 2 * rec :]
    with pytest.raises(BitstreamError, match="chunk 0"):
        decode_bytes(swapped)
    with pytest.raises(BitstreamError, match="trailing"):
        decode_bytes(data + b"\x00")
    dropped = data[:h] + data[h + rec :]
    with pytest.raises(BitstreamError):
        decode_bytes(dropped)

    buf = io.BytesIO()
    with pytest.raises(RuntimeError):
        with RcqWriter(buf, header) as writer:
            writer.write_chunk(codes)
            raise RuntimeError("encoder crashed")
    with pytest.raises(BitstreamError, match="truncated"):
        decode_bytes(buf.getvalue())


# -- forged CRCs: the record CRC is no signature, so payload checks must hold on their own -----------------
def split_records(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(header, [(frames, payload), ...]) of a valid file; the end record is dropped."""
    pos = header_len(data)
    head, chunks = data[:pos], []
    while True:
        frames, count, _ = struct.unpack_from("<HII", data, pos)
        pos += 10
        if frames == 0:
            return head, chunks
        chunks.append((frames, data[pos : pos + count]))
        pos += count


def forge(head: bytes, chunks: list[tuple[int, bytes]]) -> bytes:
    """A file with these records and CRCs recomputed as a writer would (docs/format.md), end record included."""
    seed = zlib.crc32(head[:-4])
    out = [head]

    def record(index: int, frames: int, count: int, payload: bytes) -> bytes:
        crc = zlib.crc32(payload, zlib.crc32(struct.pack("<IHI", index, frames, count), seed))
        return struct.pack("<HII", frames, count, crc) + payload

    for i, (frames, payload) in enumerate(chunks):
        out.append(record(i, frames, len(payload), payload))
    out.append(record(len(chunks), 0, sum(f for f, _ in chunks), b""))
    return b"".join(out)


def skewed_entropy_file(frames=40, chunk=16, seed=16):
    """An entropy-mode file whose chunks are all range coded (skewed codes, so no plain fallback)."""
    rng = np.random.default_rng(seed)
    sizes = (1024, 64)
    header = RcqHeader(
        model_id="forge",
        model_hash=bytes(16),
        model_sample_rate=16000,
        original_sample_rate=16000,
        channels=2,
        num_samples=frames * 320,
        hop_length=320,
        codebook_sizes=sizes,
        coding_mode=1,
        chunk_frames=chunk,
    )
    freqs = estimate_frequencies([np.minimum(rng.geometric(0.3, size=(2, 2, 500)) - 1, 63)], sizes)
    codes = np.minimum(rng.geometric(0.3, size=(2, 2, frames)) - 1, 63)
    data = encode_bytes(header, codes, freqs)
    plain = 2 * (10 + 6) * chunk // 8
    assert all(len(p) < plain * f // chunk for f, p in split_records(data)[1])  # every chunk range coded
    return data, header, codes, freqs


def test_forge_helper_reproduces_the_writer():
    data, _, codes, freqs = skewed_entropy_file()
    head, chunks = split_records(data)
    assert forge(head, chunks) == data  # so a refusal below comes from the payload, not from a CRC
    np.testing.assert_array_equal(decode_bytes(forge(head, chunks), freqs)[1], codes)


@pytest.mark.parametrize("word", [bytes(4), b"\xff" * 4, b"\x01\x00\x00\x00"])
@pytest.mark.parametrize("chunk_index", [0, 2])
def test_forged_trailing_word_is_refused(word, chunk_index):
    data, _, _, freqs = skewed_entropy_file()
    head, chunks = split_records(data)
    frames, payload = chunks[chunk_index]
    chunks[chunk_index] = (frames, payload + word)
    assert len(payload + word) < packed_size(frames, 2, (1024, 64))  # still below plain: the word check decides
    assert "data left after the last code" in str(must_fail(forge(head, chunks), freqs))


def test_forged_extra_frame_is_refused():
    # seed 16: both forgeries leave constriction's decoder looking exhausted, so only the re-encoding catches them
    data, header, codes, freqs = skewed_entropy_file(seed=16)
    head, chunks = split_records(data)
    assert [f for f, _ in chunks] == [16, 16, 8]
    tables = EntropyTables(freqs, header.codebook_sizes)
    # a full chunk's record keeps saying 16 frames while its payload codes 17
    more = chunks.copy()
    more[1] = (16, tables.encode(codes[:, :, 16:33]))
    assert "data left after the last code" in str(must_fail(forge(head, more), freqs))
    # the short last chunk (8 frames) claims a 9th frame its payload does not hold
    claimed = chunks.copy()
    claimed[2] = (9, chunks[2][1])
    assert "data left after the last code" in str(must_fail(forge(head, claimed), freqs))


@settings(max_examples=200, deadline=None)
@given(
    frames=st.integers(1, 12),
    extra=st.binary(min_size=4, max_size=12).filter(lambda b: len(b) % 4 == 0),
    seed=st.integers(0, 10_000),
    p=st.floats(0.05, 0.9),
)
def test_range_coded_payloads_are_canonical(frames, extra, seed, p):
    # whatever the codes, a payload decodes only if it is exactly the writer's bytes for what it decodes to
    rng = np.random.default_rng(seed)
    sizes = (1024, 7)
    counts = np.ones((2, 1024), dtype=np.int64)
    counts[:, 0] = 10**5
    tables = EntropyTables(counts, sizes)
    codes = np.where(rng.random((1, 2, frames + 1)) < p, 0, rng.integers(0, 7, size=(1, 2, frames + 1)))
    payload = tables.encode(codes[:, :, :frames])
    with pytest.raises(BitstreamError):
        tables.decode(payload + extra, 1, frames)  # trailing words, whatever they hold
    for blob, n in ((payload, frames + 1), (tables.encode(codes), frames)):  # one frame too many / too few
        try:
            got = tables.decode(blob, 1, n)
        except BitstreamError:
            continue
        assert tables.encode(got) == blob  # only a payload a writer would produce for `got` itself
