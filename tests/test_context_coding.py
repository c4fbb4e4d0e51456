"""Context rows of the entropy coder (bitstream/entropy.py): side rows coded after the previous frame's symbol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import pitch_codec, vowel
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.bitstream import BitstreamError, RcqHeader, decode_bytes, encode_bytes
from rotcodec.bitstream.entropy import EntropyTables
from rotcodec.inference import load_model
from rotcodec.models import save_model
from rotcodec.models.envelope import EnvelopeConfig
from rotcodec.train.export import count_codes

pytestmark = pytest.mark.usefixtures("one_thread")


def header(sizes: tuple[int, ...], channels: int = 1, chunk: int = 16, version: int | None = None) -> RcqHeader:
    extra = {} if version is None else {"format_version": version}
    return RcqHeader(
        model_id="ctx-test",
        model_hash=bytes(16),
        model_sample_rate=16000,
        original_sample_rate=16000,
        channels=channels,
        num_samples=0,
        hop_length=320,
        codebook_sizes=sizes,
        coding_mode=1,
        chunk_frames=chunk,
        **extra,
    )


def markov(rng: np.random.Generator, k: int, shape: tuple[int, int], stay: float) -> np.ndarray:
    """Symbols `[channels, frames]` in 0..k-1 that keep their value with probability `stay`."""
    out = np.zeros(shape, np.int64)
    if not shape[1]:
        return out
    out[:, 0] = rng.integers(0, k, shape[0])
    for t in range(1, shape[1]):
        move = rng.random(shape[0]) >= stay
        out[:, t] = np.where(move, rng.integers(0, k, shape[0]), out[:, t - 1])
    return out


def tables_for(rng: np.random.Generator, sizes: tuple[int, ...], ctx_rows: int) -> tuple[np.ndarray, np.ndarray]:
    freqs = np.zeros((len(sizes), max(sizes)), np.int64)
    for r, k in enumerate(sizes):
        freqs[r, :k] = rng.integers(0, 50, k)
    width = max(sizes[:ctx_rows], default=2)
    context = np.zeros((len(sizes), width, width), np.int64)
    for r in range(ctx_rows):
        k = sizes[r]
        context[r, :k, :k] = rng.integers(0, 30, (k, k)) * (rng.random((k, k)) < 0.7)
    return freqs, context


@settings(max_examples=40, deadline=None)
@given(
    side=st.lists(st.integers(2, 16), min_size=1, max_size=5),
    channels=st.integers(1, 3),
    frames=st.integers(0, 40),
    chunk=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_context_rows_round_trip(side: list[int], channels: int, frames: int, chunk: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = (*side, 64, 8)
    freqs, context = tables_for(rng, sizes, len(side))
    codes = np.stack([markov(rng, k, (channels, frames), 0.6) for k in sizes], axis=1)
    data = encode_bytes(header(sizes, channels, chunk), codes, freqs, context)
    _, got = decode_bytes(data, freqs, context)
    np.testing.assert_array_equal(got, codes)


def test_context_makes_slow_rows_cheaper_and_is_part_of_the_tables_identity() -> None:
    rng = np.random.default_rng(0)
    sizes = (7, 7)
    codes = np.stack([markov(rng, 7, (2, 400), 0.9), markov(rng, 7, (2, 400), 0.9)], 1)
    freqs = np.zeros((2, 7), np.int64)
    context = np.zeros((2, 7, 7), np.int64)
    for r in range(2):
        freqs[r] = np.bincount(codes[:, r].reshape(-1), minlength=7)
    for r in range(2):
        np.add.at(context[r], (codes[:, r, :-1], codes[:, r, 1:]), 1)
    plain = EntropyTables(freqs, sizes)
    with_context = EntropyTables(freqs, sizes, context)
    assert with_context.context_rows == [0, 1] and plain.crc != with_context.crc
    assert len(with_context.encode(codes)) < 0.6 * len(plain.encode(codes))
    data = encode_bytes(header(sizes, 2, chunk=64), codes, freqs, context)
    with pytest.raises(BitstreamError, match="do not match"):
        decode_bytes(data, freqs)  # the same counts without their context tables: another model
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x40
    with pytest.raises(BitstreamError):
        decode_bytes(bytes(damaged), freqs, context)


def test_context_tables_ignore_rows_they_do_not_cover(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows with no counts or an alphabet wider than the tables are coded as before; version-5 files, written
    before context rows existed, decode with the context tables given."""
    import rotcodec.bitstream.header as header_module

    rng = np.random.default_rng(1)
    sizes = (5, 12, 64)
    freqs, context = tables_for(rng, sizes, 1)
    context = context[:, :5, :5].copy()
    context[1] = 0
    assert EntropyTables(freqs, sizes, context).context_rows == [0]
    codes = np.stack([markov(rng, k, (1, 30), 0.5) for k in sizes], axis=1)
    with monkeypatch.context() as m:
        m.setattr(header_module, "VERSION", 5)
        old = encode_bytes(header(sizes, version=5), codes, freqs)
    assert old[4] == 5
    np.testing.assert_array_equal(decode_bytes(old, freqs, context)[1], codes)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny pitch codec with band gains, saved with its code tables, with and without context tables."""
    root = tmp_path_factory.mktemp("ctx")
    for i in range(3):
        sf.write(root / f"v{i}.wav", vowel(16000, 3.0, seed=20 + i), 16000)
    codec = pitch_codec(0, lookahead=1, envelope=EnvelopeConfig([0, 300, 600, 1000, 2000, 4000], 3.0, 9))
    counts, context = count_codes(codec, [str(root)], 9.0)
    save_model(codec, root / "static", code_counts=counts)
    save_model(codec, root / "context", code_counts=counts, context_counts=context)
    return root / "static", root / "context"


def test_a_model_with_context_tables_codes_the_same_audio_in_fewer_bytes(exported: tuple[Path, Path]) -> None:
    static, context = (load_model(p) for p in exported)
    assert static.context_counts is None and len(context.context_counts) == 6
    x = vowel(16000, 4.0, seed=7)
    layout = static.codec.layout(2, 0)
    a, b = static.compress(x, 16000, layout=layout), context.compress(x, 16000, layout=layout)
    assert len(b) < len(a)
    ya, yb = static.decompress(a)[0], context.decompress(b)[0]
    np.testing.assert_array_equal(ya, yb)
    with pytest.raises(BitstreamError, match="do not match"):
        static.decompress(b)


def test_planning_prices_context_rows_as_the_stream_spends_them(exported: tuple[Path, Path]) -> None:
    model = load_model(exported[1])
    x = vowel(16000, 4.0, seed=8)
    costs = model.row_costs(x[None], 16000)
    layout = model.codec.layout(2, 0)
    data = model.compress(x, 16000, layout=layout)
    payload_kbps = model.bitrate(layout, costs=costs)
    measured = len(data) * 8 / 4.0 / 1000 - model.overhead_kbps(layout, 1, 4.0)
    assert measured == pytest.approx(payload_kbps, rel=0.05)
    tables_only = model.bitrate(layout)  # the tables' own estimate, with context: near too
    assert tables_only == pytest.approx(payload_kbps, rel=0.25)
    assert torch.is_tensor(torch.as_tensor(model.context_tables(layout)))
