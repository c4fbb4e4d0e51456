"""Python inference API: round trips, streaming == whole-file codes, batching, entropy mode, model lookup."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.audio import AudioError
from rotcodec.bitstream import CodingMode, decode_bytes, estimate_frequencies
from rotcodec.bitstream.layout import StreamLayout
from rotcodec.inference import (
    ModelMismatchError,
    OptionError,
    decompress,
    decompress_file,
    load_model,
    read_rcq_header,
)
from rotcodec.inference.model import CPU_BATCH_FRAMES
from rotcodec.models import Codec, CodecConfig, save_model
from rotcodec.pretrained import ModelNotFoundError
from rotcodec.quantize import RVQConfig

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.wav"))


def speechlike(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Gliding harmonic tones with syllable-like envelopes and a little noise, float32 [channels, time]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for c in range(channels):
        f0 = 110 + 40 * c + 30 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 6))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t + c)
        out.append(0.2 * env * x + 0.01 * rng.standard_normal(t.size))
    return np.asarray(out, dtype=np.float32)


def clips() -> list[tuple[str, np.ndarray, int]]:
    """Real speech from samples/ when present, generated audio otherwise."""
    if SAMPLES:
        return [(p.name, sf.read(p, dtype="float32", always_2d=True)[0].T, sf.info(p).samplerate) for p in SAMPLES]
    return [(f"gen{i}", speechlike(3.0, 16000, seed=i), 16000) for i in range(3)]


def tiny_codec(seed: int = 0, causal: bool = True) -> Codec:
    """A tiny causal codec (hop 320 at 16 kHz, 4 x 64 codes) whose codebooks are k-means initialised on
    audio, so code usage is spread as in a trained model."""
    torch.manual_seed(seed)
    q = RVQConfig(dim=16, n_q=4, codebook_size=64, kmeans_init=True, kmeans_iters=5)
    cfg = CodecConfig(
        sample_rate=16000,
        base_channels=8,
        strides=[2, 4, 5, 8],
        latent_dim=16,
        dilations=[1],
        quantizer=q,
        causal=causal,
    )
    codec = Codec(cfg)
    codec.train()
    codec(torch.from_numpy(speechlike(2.0, 16000, seed=seed + 10))[None])
    return codec.eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    save_model(tiny_codec(0), folder / "tiny")
    save_model(tiny_codec(1), folder / "other")
    return folder


@pytest.fixture(scope="module")
def model(model_dir: Path):
    return load_model(model_dir / "tiny")


def payload_bytes(frames: int, chunk: int, bits_per_frame: int) -> int:
    full, rest = divmod(frames, chunk)
    return full * math.ceil(chunk * bits_per_frame / 8) + (math.ceil(rest * bits_per_frame / 8) if rest else 0)


@pytest.mark.parametrize("index", range(3))
def test_round_trip_on_samples_keeps_length_rate_and_bitrate(model, index: int) -> None:
    name, wav, sr = clips()[index]
    data = model.compress(wav, sr, n_q=3)
    out, out_sr = model.decompress(data)
    assert out_sr == sr and out.shape == wav.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    header, codes = decode_bytes(data)
    frames = math.ceil(round(wav.shape[1] * 16000 / sr) / 320)
    assert codes.shape == (wav.shape[0], 3, frames)
    # Plain mode: exactly header + chunk records + 6 bits per code.
    chunks = math.ceil(frames / header.chunk_frames)
    header_len = 61 + 2 * 3 + len("tiny")
    assert len(data) == header_len + 10 * (chunks + 1) + payload_bytes(frames, header.chunk_frames, 3 * 6)
    nominal = model.bitrate(model.codec.layout(3)) * 1000 / 8 * wav.shape[1] / sr  # bytes
    assert nominal <= len(data) <= nominal + header_len + 10 * (chunks + 1) + 3  # + one partly filled frame


def test_stereo_44k_round_trip(model) -> None:
    wav = speechlike(1.3, 44100, channels=2, seed=3)
    wav[1] *= 0.3
    data = model.compress(wav, 44100)
    out, sr = model.decompress(data)
    assert sr == 44100 and out.shape == wav.shape
    assert read_rcq_header(data).channels == 2
    # channels are coded independently: channel 1's codes are those of channel 1 compressed alone
    np.testing.assert_array_equal(decode_bytes(data)[1][1], decode_bytes(model.compress(wav[1], 44100))[1][0])


def test_mono_1d_input_and_tiny_clip(model) -> None:
    out, sr = model.decompress(model.compress(speechlike(0.5, 16000)[0], 16000))
    assert out.shape == (1, 8000) and sr == 16000
    out, _ = model.decompress(model.compress(np.full(7, 0.1, np.float32), 48000))  # fewer than one frame
    assert out.shape == (1, 7)


def test_samples_beyond_full_scale_are_coded_with_a_warning_that_counts_them(model) -> None:
    wav = 0.1 * speechlike(0.5, 16000)[0]
    wav[[10, 20, 30]] = [1.5, -2.0, 1.01]
    with pytest.warns(UserWarning, match=r"3 of 8000 samples lie beyond ±1 \(peak 2;"):
        out, _ = model.decompress(model.compress(wav, 16000))
    assert out.shape == (1, 8000) and np.abs(out).max() <= 1.0


def test_chunked_codes_equal_whole_file_codes(model) -> None:
    model.step_seconds = 0.5  # 6 model calls for this clip
    try:
        wav = speechlike(3.07, 16000, seed=4)
        whole = model.codec.encode(torch.from_numpy(wav)[None]).numpy()[0]
        _, codes = decode_bytes(model.compress(wav, 16000))
        np.testing.assert_array_equal(codes, whole)
        # With resampling: the soxr stream equals one-shot resampling, so codes equal the whole-file pass.
        wav44 = speechlike(2.3, 44100, channels=2, seed=5)
        res = soxr.resample(wav44.T, 44100, 16000, quality="HQ").T
        whole = model.codec.encode(torch.from_numpy(np.ascontiguousarray(res))[:, None]).numpy()[:, 0]
        _, codes = decode_bytes(model.compress(wav44, 44100))
        np.testing.assert_array_equal(codes, whole)
    finally:
        model.step_seconds = 5.0


@settings(max_examples=8, deadline=None)
@given(block=st.floats(0.003, 1.5), sr=st.sampled_from([16000, 22050, 44100]))
def test_bytes_do_not_depend_on_input_block_size(model, block: float, sr: int) -> None:
    wav = speechlike(1.1, sr, channels=2, seed=6)
    reference = model.compress(wav, sr)
    old = model.block_seconds
    try:
        model.block_seconds = block
        assert model.compress(wav, sr) == reference
    finally:
        model.block_seconds = old


def test_encode_stream_is_lazy(model) -> None:
    """Codes of early blocks reach the sink before later blocks are read (bounded memory)."""
    emitted: list[int] = []
    seen_before: list[int] = []

    def blocks():
        for i in range(6):
            seen_before.append(len(emitted))
            yield speechlike(1.0, 16000, seed=i)

    model.step_seconds = 1.0
    model.encode_stream(blocks(), 16000, 1, model.codec.layout(2, None), lambda c: emitted.append(c.shape[2]))
    model.step_seconds = 5.0
    assert seen_before[-1] >= 4 and sum(emitted) == 300


def test_compress_many_batches_equal_single(model) -> None:
    wavs = [speechlike(1.0, 22050, 2, seed=s) for s in range(3)] + [speechlike(0.4, 16000, seed=9)]
    rates = [22050, 22050, 22050, 16000]
    many = model.compress_many(wavs, rates, n_q=2, max_rows=4)
    assert many == [model.compress(w, r, n_q=2) for w, r in zip(wavs, rates, strict=True)]


def test_kbps_picks_stages(model) -> None:
    layout = model.codec.layout
    assert model.bitrate(layout(1)) == pytest.approx(0.3)
    assert model.plan(kbps=0.95) == layout(3) == StreamLayout(3)
    assert model.plan(kbps=0.95, channels=2) == layout(1)
    assert model.plan(kbps=100).n_q == 4
    assert model.plan().n_q == 4
    # A file's plan counts its header and chunk records, spread over at least 10 s: 2 stages (0.6 kbps) fit
    # 0.7 kbps for 20 s and for 1 s, and the 1 s file exceeds 0.7 kbps only by its header and records.
    for seconds in (20.0, 1.0):
        data = model.compress(speechlike(seconds, 16000), 16000, kbps=0.7)
        assert read_rcq_header(data).n_q == 2
    header_and_records = 61 + 2 * 2 + len("tiny") + 2 * 10
    assert len(data) * 8 / 1000 > 0.7 >= (len(data) - header_and_records) * 8 / 1000
    with pytest.raises(OptionError):
        model.plan(n_q=5)
    with pytest.raises(OptionError):
        model.compress(speechlike(0.5, 16000), 16000, entropy=True)  # no tables


def test_entropy_mode_beats_plain_on_held_out_audio(model, tmp_path: Path) -> None:
    audio = clips()
    codes = [decode_bytes(model.compress(w, sr))[1] for _, w, sr in audio[:-1]]
    counts = estimate_frequencies(codes, [64] * 4)
    save_model(model.codec, tmp_path / "ent", code_counts=torch.from_numpy(counts))
    ent = load_model(tmp_path / "ent")
    _, wav, sr = audio[-1]
    packed, plain = ent.compress(wav, sr), ent.compress(wav, sr, entropy=False)
    assert read_rcq_header(packed).coding_mode == CodingMode.ENTROPY
    assert len(packed) < len(plain)
    a, _ = ent.decompress(packed)
    b, _ = ent.decompress(plain)
    np.testing.assert_array_equal(a, b)


def test_decompress_finds_model_by_fingerprint(model, model_dir: Path, monkeypatch, tmp_path: Path) -> None:
    data = model.compress(speechlike(0.5, 16000), 16000)
    monkeypatch.setenv("ROTCODEC_MODELS", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError, match="not installed"):
        decompress(data)
    monkeypatch.setenv("ROTCODEC_MODELS", str(model_dir))
    out, sr = decompress(data)
    assert out.shape == (1, 8000) and sr == 16000
    assert load_model("tiny").fingerprint == model.fingerprint
    with pytest.raises(ModelMismatchError, match="encoded with model 'tiny'"):
        decompress(data, model=model_dir / "other")


def test_file_api_streams_and_is_atomic(model, tmp_path: Path) -> None:
    src = tmp_path / "in.flac"
    sf.write(src, speechlike(2.0, 32000, 2).T, 32000)
    before = src.read_bytes()
    res = model.compress_file(src, tmp_path / "x.rcq")
    assert res.size == (tmp_path / "x.rcq").stat().st_size and res.duration == pytest.approx(2.0)
    with pytest.raises(ValueError, match="already exists"):
        model.compress_file(src, tmp_path / "x.rcq")
    decompress_file(tmp_path / "x.rcq", tmp_path / "y.wav", model=model)
    info = sf.info(tmp_path / "y.wav")
    assert (info.samplerate, info.channels, info.frames) == (32000, 2, 64000)
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.flac", "x.rcq", "y.wav"]  # no temp files left


@pytest.mark.parametrize(
    ("wav", "sr", "message"),
    [
        (np.zeros((1, 0), np.float32), 16000, "zero length"),
        (np.array([0.0, np.nan, 0.1], np.float32), 16000, "NaN or Inf"),
        (np.array([0.0, np.inf], np.float32), 16000, "NaN or Inf"),
        (np.zeros(10, np.float32), 5, "sample rate"),
    ],
)
def test_bad_audio_raises_audio_error(model, wav: np.ndarray, sr: int, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        model.compress(wav, sr)


def test_bad_streams_raise_value_errors(model) -> None:
    data = model.compress(speechlike(1.0, 16000), 16000)
    with pytest.raises(ValueError, match="truncated"):
        model.decompress(data[:-5])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(ValueError, match="CRC"):
        model.decompress(bytes(flipped))
    with pytest.raises(ValueError, match="not an .rcq"):
        model.decompress(b"RIFF....WAVEfmt ")
    with pytest.raises(ModelNotFoundError):
        load_model(io.StringIO().__class__.__name__ + "-no-such-model")


def test_non_causal_model_codes_whole_files(tmp_path: Path) -> None:
    """A non-causal (music-style) model cannot stream: compress/decompress code the whole file in one call,
    so the codes and audio equal the codec's own whole-signal encode/decode."""
    save_model(tiny_codec(2, causal=False), tmp_path / "offline")
    model = load_model(tmp_path / "offline")
    assert not model.streams
    model.block_seconds = 0.25  # several input blocks and several chunks still give one model call
    wav = speechlike(2.3, 16000, seed=4)
    data = model.compress(wav, 16000, n_q=3)
    _, codes = decode_bytes(data)
    x = torch.from_numpy(wav)[None]
    expected = model.codec.encode(x, 3)[0].numpy()
    np.testing.assert_array_equal(codes, expected)
    out, sr = model.decompress(data)
    whole = model.codec.decode(torch.from_numpy(expected)[None])[0, :, : wav.shape[1]].numpy()
    assert sr == 16000 and out.shape == wav.shape
    np.testing.assert_allclose(out, whole, atol=1e-6)
    result = model.compress_file(_wav_file(tmp_path / "in.wav", wav), tmp_path / "out.rcq")
    assert result.header.n_q == model.n_q and (tmp_path / "out.rcq").stat().st_size == result.size


def _wav_file(path: Path, wav: np.ndarray) -> Path:
    sf.write(path, wav.T, 16000, subtype="FLOAT")
    return path


def test_python_api_takes_soundfile_layout_and_int_pcm(model) -> None:
    """[time, channels] (what soundfile returns) and int16/int32 PCM code like the float [channels, time] array;
    a square array is refused as ambiguous; input beyond ±1 warns."""
    wav = speechlike(1.0, 16000, 2, seed=3) * 0.5  # [2, time]
    reference = model.compress(wav, 16000, n_q=2)
    assert model.compress(wav.T.copy(), 16000, n_q=2) == reference
    pcm16 = np.round(wav * 32768).astype(np.int16)
    assert model.compress(pcm16, 16000, n_q=2) == model.compress(pcm16.astype(np.float32) / 32768, 16000, n_q=2)
    pcm32 = pcm16.astype(np.int32) << 16
    assert model.compress(pcm32, 16000, n_q=2) == model.compress(pcm16, 16000, n_q=2)
    with pytest.raises(AudioError, match="ambiguous"):
        model.compress(np.zeros((2, 2), np.float32), 16000, n_q=2)
    with pytest.raises(AudioError, match="int16 or int32"):
        model.compress(np.zeros(100, np.uint8), 16000, n_q=2)
    with pytest.warns(UserWarning, match="beyond ±1"):
        model.compress(wav * 10, 16000, n_q=2)


@pytest.fixture
def shipped():
    """The bundled speech16k (pitch row, envelope rows: every kind of streaming state), batch budget restored."""
    m = load_model()
    before = m.batch_frames
    yield m
    m.batch_frames = before


def test_channel_groups_code_like_one_batch(shipped) -> None:
    # 3 channels at 24 kHz: by default each channel is its own group, with its own streaming state (pitch
    # lookahead, convs, envelope overlap-add); the codes must equal those of one batch, the decode up to float
    # rounding
    wav = speechlike(1.3, 24000, 3, seed=4)
    lay = shipped.plan(6.0, None, 3)
    assert shipped._groups(250, 3) == [(0, 1), (1, 2), (2, 3)]
    grouped = shipped.compress(wav, 24000, layout=lay)
    shipped.batch_frames = 10**9
    whole = shipped.compress(wav, 24000, layout=lay)
    shipped.batch_frames = CPU_BATCH_FRAMES
    tables, context = shipped.tables(lay), shipped.context_tables(lay)
    assert decode_bytes(grouped, tables, context)[1].tolist() == decode_bytes(whole, tables, context)[1].tolist()
    y_grouped, _ = shipped.decompress(whole)
    shipped.batch_frames = 10**9
    y_whole, sr = shipped.decompress(whole)
    assert sr == 24000 and y_grouped.shape == y_whole.shape == wav.shape
    np.testing.assert_allclose(y_grouped, y_whole, atol=2e-5)
    assert np.abs(y_whole).max() > 0.05  # real audio, not silence on both sides


def test_groups_follow_the_budget(shipped) -> None:
    assert shipped._groups(250, 1) == [(0, 1)]  # mono: one call per step, as before batching by budget
    assert shipped._groups(125, 5) == [(0, 2), (2, 4), (4, 5)]
    shipped.batch_frames = 0  # never below one channel per call
    assert shipped._groups(250, 2) == [(0, 1), (1, 2)]


def test_many_channel_stream_decodes_under_a_memory_cap(shipped, tmp_path: Path) -> None:
    """A small crafted stream (valid CRCs, every field in range) with 256 channels: decoding it all in one
    batch needs about 2 GB; by budget it stays under 1 GB of RSS, checked in a child process whose address
    space is capped at 1.5 GB (where one batch fails)."""
    import resource
    import subprocess
    import sys

    from rotcodec.bitstream import RcqWriter

    channels, frames, sr = 256, 8, 16000
    lay = shipped.plan(None, None, channels)
    header = shipped.make_header(sr, channels, frames * shipped.hop_length, lay, None)
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, k, (channels, frames)) for k in header.codebook_sizes], axis=1)
    src = tmp_path / "many.rcq"
    with open(src, "wb") as f, RcqWriter(f, header, shipped.tables(lay), shipped.context_tables(lay)) as writer:
        writer.write_chunk(codes)
    assert src.stat().st_size < 200_000
    script = (
        "import resource, sys\n"
        "from rotcodec.cli.main import main\n"
        "rc = main(['decompress', sys.argv[1], '-o', sys.argv[2], '-q'])\n"
        "print(rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    cap = 1536 << 20

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(__import__("os").environ) | {"OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(src), str(tmp_path / "many.wav")],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rc, peak_mb = map(int, out.stdout.split())
    assert rc == 0 and peak_mb < 1024, peak_mb
    info = sf.info(tmp_path / "many.wav")
    assert (info.channels, info.frames) == (channels, frames * shipped.hop_length)
