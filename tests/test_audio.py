"""Tests for rotcodec.audio: file I/O round trips, bad-input errors, resampling and channel mixing."""

from __future__ import annotations

import io
import os
import struct
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import write_flac_without_length
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.audio import AudioError, load_audio, read_info, resample, save_audio, to_channels


def _noise(channels: int, n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-0.8, 0.8, (channels, n))).astype(np.float32)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_pcm16(tmp_path, fmt, channels):
    x = _noise(channels, 4000)
    path = tmp_path / f"x.{fmt}"
    save_audio(path, x, 16000)
    y, sr = load_audio(path)
    assert sr == 16000
    assert y.dtype == np.float32 and y.shape == (channels, 4000)
    assert np.max(np.abs(y - x)) <= 1.0 / 32768 + 1e-7  # one PCM_16 quantisation step
    assert sf.info(str(path)).format == fmt.upper()


def test_round_trip_float_is_exact_and_1d_input_is_mono(tmp_path):
    x = _noise(1, 1000)[0]
    save_audio(tmp_path / "f.wav", x, 22050, subtype="FLOAT")
    y, sr = load_audio(tmp_path / "f.wav")
    assert sr == 22050 and y.shape == (1, 1000)
    np.testing.assert_array_equal(y[0], x)


def test_integer_subtypes_clip_instead_of_wrapping(tmp_path):
    x = np.array([[1.7, -2.5, 0.5]], np.float32)
    save_audio(tmp_path / "c.wav", x, 8000)
    np.testing.assert_array_equal(x, np.array([[1.7, -2.5, 0.5]], np.float32))  # not clipped in place
    y, _ = load_audio(tmp_path / "c.wav")
    assert y[0, 0] > 0.99 and y[0, 1] < -0.99 and abs(y[0, 2] - 0.5) < 1e-4


def test_save_refuses_overwrite_unless_forced(tmp_path):
    path = tmp_path / "a.wav"
    save_audio(path, _noise(1, 100), 8000)
    before = path.read_bytes()
    with pytest.raises(AudioError, match="already exists"):
        save_audio(path, _noise(1, 200, 1), 8000)
    assert path.read_bytes() == before
    save_audio(path, _noise(1, 200, 1), 8000, force=True)
    assert load_audio(path)[0].shape == (1, 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]  # no temp files left


def test_failed_write_leaves_no_partial_output(tmp_path, monkeypatch):
    path = tmp_path / "out.wav"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        save_audio(path, _noise(1, 100), 8000)
    assert list(tmp_path.iterdir()) == []


def test_saved_file_has_normal_permissions(tmp_path):
    save_audio(tmp_path / "p.wav", _noise(1, 10), 8000)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "p.wav").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    "wav, sr, match",
    [
        (np.full((1, 10), np.nan, np.float32), 8000, "NaN or Inf"),
        (np.zeros((1, 0), np.float32), 8000, "zero-length"),
        (np.zeros((1, 10), np.float32), 50, "outside the supported"),
        (np.zeros((2, 2, 2), np.float32), 8000, "shaped"),
    ],
)
def test_save_rejects_bad_audio(tmp_path, wav, sr, match):
    with pytest.raises(AudioError, match=match):
        save_audio(tmp_path / "bad.wav", wav, sr)
    assert list(tmp_path.iterdir()) == []


def test_file_objects_and_stdio(tmp_path, monkeypatch):
    x = _noise(2, 500)
    buf = io.BytesIO()
    save_audio(buf, x, 16000, format="flac")
    buf.seek(0)
    y, sr = load_audio(buf)
    assert sr == 16000 and y.shape == (2, 500)

    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    save_audio("-", x, 16000)
    data = out.getvalue()
    assert data[:4] == b"RIFF"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    z, sr2 = load_audio("-")
    assert sr2 == 16000 and np.max(np.abs(z - x)) <= 1.0 / 32768 + 1e-7


def _wav_with_header_rate(path, rate: int) -> None:
    sf.write(str(path), np.zeros(100, np.float32), 8000, subtype="PCM_16")
    b = bytearray(path.read_bytes())
    b[24:28] = struct.pack("<I", rate)  # WAV fmt chunk: sample rate, then byte rate
    b[28:32] = struct.pack("<I", rate * 2)
    path.write_bytes(bytes(b))


def _make_bad(tmp_path, kind: str):
    p = tmp_path / f"{kind}.wav"
    if kind == "missing":
        return p
    if kind == "directory":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not audio\n")
    elif kind == "zero_length":
        sf.write(str(p), np.zeros((0, 1), np.float32), 8000)
    elif kind == "nan":
        sf.write(str(p), np.array([0.1, np.nan, 0.2], np.float32), 8000, subtype="FLOAT")
    elif kind == "inf":
        sf.write(str(p), np.array([0.1, np.inf], np.float32), 8000, subtype="FLOAT")
    elif kind == "flac_no_length":
        write_flac_without_length(p)
    elif kind == "rate_low":
        _wav_with_header_rate(p, 3)
    elif kind == "rate_high":
        _wav_with_header_rate(p, 50_000_000)
    return p


@pytest.mark.parametrize(
    "kind, match",
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("empty", "empty file"),
        ("text", "not a readable audio file"),
        ("zero_length", "zero length"),
        ("nan", "NaN or Inf"),
        ("inf", "NaN or Inf"),
        ("rate_low", "outside the supported"),
        ("rate_high", "outside the supported"),
        ("flac_no_length", "not a readable audio file"),
    ],
)
def test_load_errors_are_one_line_audio_errors(tmp_path, kind, match):
    path = _make_bad(tmp_path, kind)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(AudioError, match=match) as info:
        load_audio(path)
    if kind in ("text", "flac_no_length"):  # the header-only probe used by manifests agrees
        with pytest.raises(AudioError, match=match):
            read_info(path)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    if before is not None:
        assert path.read_bytes() == before  # never modifies its input


def test_load_empty_stdin_is_an_error(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(AudioError, match="empty input"):
        load_audio("-")


@settings(max_examples=40, deadline=None)
@given(
    sr_in=st.sampled_from([8000, 11025, 16000, 22050, 24000, 44100, 48000]),
    sr_out=st.sampled_from([8000, 16000, 24000, 32000, 44100, 48000]),
    n=st.integers(1, 5000),
    channels=st.integers(1, 3),
)
def test_resample_length_and_shape(sr_in, sr_out, n, channels):
    x = _noise(channels, n)
    before = x.copy()
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32 and y.shape[0] == channels
    assert abs(y.shape[1] - n * sr_out / sr_in) <= 1.0
    np.testing.assert_array_equal(x, before)


def test_resample_preserves_a_sine_and_1d_shape():
    t_in = np.arange(16000) / 16000
    y = resample(np.sin(2 * np.pi * 440 * t_in).astype(np.float32), 16000, 24000)
    assert y.ndim == 1 and y.shape[0] == 24000
    t_out = np.arange(24000) / 24000
    err = y[1000:-1000] - np.sin(2 * np.pi * 440 * t_out[1000:-1000])
    assert np.max(np.abs(err)) < 1e-3


def test_resample_rejects_bad_rates():
    with pytest.raises(AudioError, match="whole number"):
        resample(np.zeros(10, np.float32), 16000.5, 8000)
    with pytest.raises(AudioError, match="outside"):
        resample(np.zeros(10, np.float32), 16000, 0)


def test_to_channels_mixes_and_duplicates():
    stereo = np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 1.0]], np.float32)
    before = stereo.copy()
    mono = to_channels(stereo, 1)
    np.testing.assert_allclose(mono, [[0.5, 0.0, 0.0]])
    np.testing.assert_array_equal(stereo, before)
    dup = to_channels(mono, 2)
    assert dup.shape == (2, 3)
    np.testing.assert_array_equal(dup[0], dup[1])
    assert to_channels(np.ones(4, np.float32), 1).shape == (1, 4)
    same = to_channels(stereo, 2)
    same[0, 0] = 9.0  # a copy, not a view of the input
    assert stereo[0, 0] == 1.0
    with pytest.raises(AudioError, match="cannot convert 3 channels to 2"):
        to_channels(np.zeros((3, 4), np.float32), 2)


def test_truncated_wav_is_refused_but_streamed_sizes_pass(tmp_path) -> None:
    from rotcodec.audio import check_wav_complete

    full = tmp_path / "full.wav"
    sf.write(full, np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # libsndfile alone reads the half silently
    for read in (load_audio, read_info):
        with pytest.raises(AudioError, match="truncated WAV.*promises 32000 bytes"):
            read(cut)
    streamed = tmp_path / "streamed.wav"  # writers that cannot seek back leave 0xFFFFFFFF: "unknown"
    pos = data.index(b"data") + 4
    streamed.write_bytes(data[:pos] + b"\xff\xff\xff\xff" + data[pos + 4 : len(data) // 2])
    check_wav_complete(streamed, "streamed.wav")
    check_wav_complete(full, "full.wav")


def test_fifo_is_not_opened(tmp_path) -> None:
    from rotcodec.audio import check_input_file

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match="not a regular file"):  # opening it would block until a writer came
        check_input_file(fifo)
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(fifo)
