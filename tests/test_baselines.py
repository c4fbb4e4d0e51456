"""Tests for rotcodec.eval.baselines: real opus-tools / codec2 / lame binaries on generated audio."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import vowel
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.eval import baselines as bl
from rotcodec.eval import metrics as m
from rotcodec.eval.align import correlation_peak

SR = 16000


def needs(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"binary not installed: {', '.join(missing)}")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return vowel()


@pytest.fixture(scope="module")
def opus_ladder(speech: np.ndarray) -> dict[int, bl.BaselineResult]:
    if not bl.get_baseline("opus").is_available():
        pytest.skip("opus-tools not installed")
    codec = bl.get_baseline("opus")
    return {k: codec.run(speech, SR, k) for k in (6, 12, 24)}


def _check_output(result: bl.BaselineResult, x: np.ndarray) -> None:
    assert result.decoded.shape == x.shape and result.decoded.dtype == np.float32
    assert np.all(np.isfinite(result.decoded))
    assert np.sqrt(np.mean(result.decoded**2)) > 0.3 * np.sqrt(np.mean(x**2))
    assert result.encode_seconds > 0 and result.decode_seconds > 0


@needs("opusenc", "opusdec")
def test_opus_bitrates_match_nominal(opus_ladder: dict[int, bl.BaselineResult], speech: np.ndarray) -> None:
    for kbps, result in opus_ladder.items():
        _check_output(result, speech)
        assert result.kbps_measured == pytest.approx(kbps, rel=0.10)
        assert result.kbps_file > result.kbps_measured  # the Ogg container costs extra bytes
        assert result.details["bitrate_source"] == "opus packet payload"


@needs("opusenc", "opusdec")
def test_opus_quality_rises_with_bitrate(opus_ladder: dict[int, bl.BaselineResult], speech: np.ndarray) -> None:
    scores = {
        k: (m.mel_distance(speech, r.decoded, SR), m.si_sdr(speech, r.decoded), m.stoi(speech, r.decoded, SR))
        for k, r in opus_ladder.items()
    }
    mel, sdr, intel = zip(*(scores[k] for k in (6, 12, 24)), strict=True)
    assert mel[0] > mel[1] > mel[2], mel
    assert sdr[0] < sdr[1] < sdr[2], sdr
    assert intel[0] < intel[1] < intel[2], intel


@needs("opusenc", "opusdec")
def test_opus_output_is_aligned(opus_ladder: dict[int, bl.BaselineResult], speech: np.ndarray) -> None:
    lag, height = correlation_peak(speech, opus_ladder[24].decoded, max_lag=2000)
    assert abs(lag) <= 2 and height > 0.9


@needs("opusenc", "opusdec")
def test_opus_clips_without_touching_input(speech: np.ndarray) -> None:
    loud = speech[: SR // 2] * 3.0
    before = loud.copy()
    result = bl.get_baseline("opus").run(loud, SR, 16)
    np.testing.assert_array_equal(loud, before)
    assert result.details["clipped_samples"] == int(np.count_nonzero(np.abs(loud) > 1))
    assert result.decoded.shape == loud.shape


@needs("c2enc", "c2dec")
def test_codec2_3200_runs_and_is_aligned(speech: np.ndarray) -> None:
    result = bl.get_baseline("codec2").run(speech, SR, 3.2)
    _check_output(result, speech)
    assert result.kbps_measured == pytest.approx(3.2, rel=0.02)
    # parametric vocoder: compare envelopes; the raw decoder lag is 320 samples at 16 kHz
    lag, _ = correlation_peak(speech, result.decoded, max_lag=1000, method="envelope")
    assert abs(lag) <= 100, lag
    assert m.stoi(speech, result.decoded, SR) > 0.8


@needs("lame")
def test_mp3_runs_and_is_aligned(speech: np.ndarray) -> None:
    for kbps in (8, 32):
        result = bl.get_baseline("mp3").run(speech, SR, kbps)
        _check_output(result, speech)
        assert result.kbps_measured == pytest.approx(kbps, rel=0.10)
        assert result.details["delay_source"] == "cross-correlation"
        lag, height = correlation_peak(speech, result.decoded, max_lag=2000)
        assert abs(lag) <= 1 and height > 0.8, (kbps, lag, height)
    assert m.si_sdr(speech, result.decoded) > 10


def test_registry_and_settings() -> None:
    assert set(bl.list_baselines()) == {"opus", "codec2", "mp3"}
    assert bl.get_baseline("OPUS").name == "opus"
    with pytest.raises(bl.BaselineInputError, match="unknown baseline"):
        bl.get_baseline("flac")
    codec2 = bl.get_baseline("codec2")
    assert [codec2.check_kbps(k) for k in (3.2, 1.6, 0.7, "700c")] == ["3200", "1600", "700C", "700C"]
    for bad in (2.0, "2400", None):
        with pytest.raises(bl.BaselineInputError):
            codec2.check_kbps(bad)
    with pytest.raises(bl.BaselineInputError):
        bl.get_baseline("opus").check_kbps(5)
    with pytest.raises(bl.BaselineInputError):
        bl.get_baseline("mp3").check_kbps(12)


@pytest.mark.parametrize(
    "wav, sr",
    [
        (np.zeros((2, 100), np.float32), SR),
        (np.zeros(100, np.int16), SR),
        (np.full(100, np.nan, np.float32), SR),
        (np.zeros(0, np.float32), SR),
        (np.zeros(100, np.float32), 0),
    ],
)
def test_bad_audio_is_rejected(wav: np.ndarray, sr: int) -> None:
    with pytest.raises(bl.BaselineInputError):
        bl.get_baseline("opus").run(wav, sr, 12)


@pytest.mark.parametrize("name, package", [("opus", "opus-tools"), ("codec2", "codec2"), ("mp3", "lame")])
def test_missing_binary_names_package(name: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no codec tools
    codec = bl.get_baseline(name)
    assert not codec.is_available()
    with pytest.raises(bl.MissingEncoderError, match=f"'{package}'"):
        codec.run(np.zeros(1600, np.float32), SR, codec.bitrates[0])


def test_tool_failure_reports_stderr_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("opusenc", "opusdec"):
        script = tmp_path / tool
        script.write_text("#!/bin/sh\necho 'starting up' >&2\necho 'fatal: cannot open input' >&2\nexit 3\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(bl.EncoderFailedError) as info:
        bl.get_baseline("opus").run(np.zeros(1600, np.float32), SR, 12)
    message = str(info.value)
    assert "\n" not in message
    assert "opusenc" in message and "exit code 3" in message and "fatal: cannot open input" in message


def _ogg(packets: list[int], segments_per_page: int) -> bytes:
    """Minimal Ogg stream carrying packets of the given sizes (header fields other than lacing are dummies)."""
    lacing: list[int] = []
    for size in packets:
        lacing += [255] * (size // 255) + [size % 255]
    out = b""
    for start in range(0, len(lacing), segments_per_page):
        chunk = lacing[start : start + segments_per_page]
        out += b"OggS" + bytes(22) + bytes([len(chunk)]) + bytes(chunk) + b"\xab" * sum(chunk)
    return out


@settings(max_examples=50, deadline=None)
@given(packets=st.lists(st.integers(0, 1200), min_size=1, max_size=20), per_page=st.integers(1, 255))
def test_ogg_packet_sizes_roundtrip(packets: list[int], per_page: int) -> None:
    assert bl.ogg_packet_sizes(_ogg(packets, per_page)) == packets


def test_ogg_garbage_is_rejected() -> None:
    with pytest.raises(bl.EncoderFailedError, match="malformed Ogg"):
        bl.ogg_packet_sizes(b"RIFF" + bytes(40))
