"""`rotcodec compress/decompress/info/models`, run in-process through `main([...])` (one real subprocess)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_flac_without_length

from rotcodec.cli.main import main
from rotcodec.models import Codec, CodecConfig, save_model
from rotcodec.quantize import RVQConfig


def tone(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """float32 [time, channels] harmonic tone with a wobble and a little noise (soundfile layout)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    cols = [0.3 * np.sin(2 * np.pi * (150 + 50 * c) * t + 3 * np.sin(5 * t)) for c in range(channels)]
    return (np.stack(cols, 1) + 0.01 * rng.standard_normal((t.size, channels))).astype(np.float32)


def tiny_model(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    q = RVQConfig(dim=16, n_q=4, codebook_size=64, kmeans_init=False)
    cfg = CodecConfig(base_channels=8, strides=[2, 4, 5, 8], latent_dim=16, dilations=[1], quantizer=q)
    save_model(Codec(cfg).eval(), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    tiny_model(folder / "tiny", 0)
    tiny_model(folder / "other", 1)
    return folder


@pytest.fixture()
def env(models: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Models installed via $ROTCODEC_MODELS; work folder with a 16 kHz mono and a 44.1 kHz stereo file."""
    monkeypatch.setenv("ROTCODEC_MODELS", str(models))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sf.write(tmp_path / "mono.wav", tone(1.5, 16000), 16000)
    sf.write(tmp_path / "stereo.flac", tone(1.2, 44100, 2, seed=1), 44100)
    return tmp_path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_help_in_process_and_console_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "compress" in out and "exit codes" in out and "usage error" in out
    assert main(["compress", "--help"]) == 0
    assert "--kbps" in capsys.readouterr().out
    assert main([]) == 2
    proc = subprocess.run([sys.executable, "-m", "rotcodec.cli.main", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "decompress" in proc.stdout


def test_round_trip_mono_and_stereo(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["compress", str(env / "mono.wav"), str(env / "stereo.flac"), "-o", str(env / "c"), "--model", "tiny"])
        == 0
    )
    out = capsys.readouterr().out
    assert "measured" in out and "kbps" in out
    assert main(["decompress", str(env / "c"), "-o", str(env / "d"), "--quiet"]) == 0
    for name, sr, ch, n in [("mono", 16000, 1, 24000), ("stereo", 44100, 2, 52920)]:
        info = sf.info(env / "d" / f"{name}.wav")
        assert (info.samplerate, info.channels, info.frames) == (sr, ch, n)
    assert main(["decompress", str(env / "c" / "mono.rcq"), "-o", str(env / "m.flac")]) == 0
    assert sf.info(env / "m.flac").format == "FLAC"


def test_kbps_picks_stages_and_size_matches_bitrate(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # tiny model: 50 Hz frames x 6 bits = 0.3 kbps per stage and channel; the plan spreads the header and
    # records (99 bytes) over 10 s (0.08 kbps), so 3 stages fit 1.0 kbps and 4 do not
    assert main(["compress", str(env / "mono.wav"), "--kbps", "1.0", "--model", "tiny", "-q"]) == 0
    assert main(["info", "--json", str(env / "mono.rcq")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_q"] == 3 and info["model_id"] == "tiny" and info["coding"] == "plain"
    assert info["plain_kbps"] == pytest.approx(0.9)
    payload = math.ceil(75 * 3 * 6 / 8)  # 75 frames of 3 six-bit codes
    overhead = (61 + 2 * 3 + 4) + 10 * 2  # header + one chunk record + end record
    assert info["size_bytes"] == payload + overhead
    assert info["measured_kbps"] == pytest.approx((payload + overhead) * 8 / 1.5 / 1000)
    assert main(["info", str(env / "mono.rcq")]) == 0
    text = capsys.readouterr().out
    assert "installed" in text and "0.900 kbps" in text
    assert main(["info", str(env / "mono.wav")]) == 1
    assert "mono.wav: not an .rcq file" in capsys.readouterr().err


def test_kbps_below_the_lowest_rate_warns(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = str(env / "mono.wav"), str(env / "w.rcq")
    assert main(["compress", src, "-o", dst, "--kbps", "0.95", "--model", "tiny"]) == 0
    assert "this short pays for its header" in capsys.readouterr().out  # 1.5 s: 0.48 kbps of header
    assert main(["compress", src, "-o", dst, "--kbps", "0.2", "--model", "tiny", "--force"]) == 0  # 1 stage: 0.3
    out = capsys.readouterr()
    assert "0.2 kbps is below this model's lowest rate" in out.out + out.err


def test_stdin_to_stdout(env: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture) -> None:
    wav_bytes = (env / "stereo.flac").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(wav_bytes)))
    assert main(["compress", "-", "--model", "tiny", "--n-q", "2"]) == 0
    rcq = capsysbinary.readouterr().out
    assert rcq[:4] == b"\x89RCQ"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(rcq)))
    assert main(["decompress", "-", "--format", "flac"]) == 0  # model found from the header
    audio, sr = sf.read(io.BytesIO(capsysbinary.readouterr().out))
    assert sr == 44100 and audio.shape == (52920, 2)


def test_directory_tree_is_mirrored(env: Path) -> None:
    src = env / "tree"
    (src / "a" / "b").mkdir(parents=True)
    sf.write(src / "x.wav", tone(0.3, 16000), 16000)
    sf.write(src / "a" / "b" / "y.flac", tone(0.2, 8000), 8000)
    (src / "a" / "notes.txt").write_text("not audio")
    assert main(["compress", str(src), "-o", str(env / "codes"), "--model", "tiny", "-q"]) == 0
    assert sorted(p.relative_to(env / "codes").as_posix() for p in (env / "codes").rglob("*.rcq")) == [
        "a/b/y.rcq",
        "x.rcq",
    ]
    assert main(["decompress", str(env / "codes"), "-o", str(env / "back"), "-q"]) == 0
    assert sf.info(env / "back" / "a" / "b" / "y.wav").frames == 1600


def _corrupt(env: Path, kind: str) -> Path:
    assert main(["compress", str(env / "mono.wav"), "-o", str(env / "good.rcq"), "--model", "tiny", "-q"]) == 0
    data = bytearray((env / "good.rcq").read_bytes())
    bad = env / f"{kind}.rcq"
    if kind == "truncated":
        bad.write_bytes(bytes(data[:-9]))
    elif kind == "flipped":
        data[len(data) // 2] ^= 0x04
        bad.write_bytes(bytes(data))
    elif kind == "newer":
        data[4] = 9
        bad.write_bytes(bytes(data))
    return bad


COMPRESS_CASES = {
    "missing": ("missing.wav", "no such file"),
    "empty": ("empty.wav", "empty file"),
    "zero_length": ("zero.wav", "zero length"),
    "text": ("text.wav", "not a readable audio file"),
    "nan": ("nan.wav", "NaN or Inf"),
    "flac_no_length": ("nolength.flac", "not a readable audio file"),
    "no_audio_dir": ("emptydir", "holds no"),
}


def _make_bad_input(env: Path, case: str) -> Path:
    name = COMPRESS_CASES[case][0]
    path = env / name
    if case == "empty":
        path.write_bytes(b"")
    elif case == "zero_length":
        sf.write(path, np.zeros((0, 1), np.float32), 16000)
    elif case == "text":
        path.write_text("this is not audio\n" * 20)
    elif case == "nan":
        x = tone(0.5, 16000)
        x[100, 0] = np.nan
        sf.write(path, x, 16000, subtype="FLOAT")
    elif case == "flac_no_length":
        write_flac_without_length(path)
    elif case == "no_audio_dir":
        path.mkdir()
        (path / "readme.txt").write_text("hi")
    return path


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", sorted(COMPRESS_CASES))
def test_bad_audio_input(env: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _make_bad_input(env, case)
    before = _snapshot(env)
    assert main(["compress", str(path), "--model", "tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert COMPRESS_CASES[case][1] in err and path.name in err
    assert _snapshot(env) == before  # no output, no temp file, inputs unchanged


@pytest.mark.parametrize(
    ("kind", "message"),
    [("truncated", "truncated"), ("flipped", "CRC"), ("newer", "newer than this reader"), ("other", "encoded with")],
)
def test_bad_rcq_input(env: Path, kind: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _corrupt(env, kind if kind != "other" else "good")
    before = _snapshot(env)
    extra = ["--model", "other"] if kind == "other" else []
    assert main(["decompress", str(bad), "-o", str(env / "out.wav"), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and bad.name in err
    assert _snapshot(env) == before


def test_existing_output_is_kept_unless_force(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = env / "mono.rcq"
    target.write_bytes(b"precious")
    assert main(["compress", str(env / "mono.wav"), "--model", "tiny"]) == 1
    assert "already exists" in capsys.readouterr().err and target.read_bytes() == b"precious"
    assert main(["compress", str(env / "mono.wav"), "--model", "tiny", "--force", "-q"]) == 0
    assert target.read_bytes()[:4] == b"\x89RCQ"


def test_unwritable_output_folder(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(env)
    # a regular file where a folder should be: fails even for root, unlike chmod
    assert main(["compress", str(env / "mono.wav"), "-o", str(env / "mono.wav" / "x.rcq"), "--model", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "x.rcq" in err and "Traceback" not in err
    assert _snapshot(env) == before


def test_one_bad_file_does_not_stop_the_others(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _make_bad_input(env, "text")
    assert main(["compress", str(bad), str(env / "mono.wav"), "-o", str(env / "o"), "--model", "tiny", "-q"]) == 1
    assert (env / "o" / "mono.rcq").is_file() and not (env / "o" / "text.rcq").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["compress", "mono.wav", "--kbps", "1", "--n-q", "2"],
        ["compress", "mono.wav", "--kbps", "-3"],
        ["compress", "mono.wav", "--n-q", "9", "--model", "tiny"],
        ["compress", "mono.wav", "--no-such-option"],
        ["compress", "-", "mono.wav"],
        ["compress", "mono.wav", "--device", "tpu"],
        ["decompress", "x.rcq", "--format", "mp3"],
    ],
)
def test_usage_errors_exit_2(env: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(env)
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err
    assert not list(env.glob("*.rcq"))


def test_models_lists_local_models(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {r["name"]: r for r in rows}
    assert {"tiny", "other"} <= set(by_name)
    assert by_name["tiny"]["kbps_max"] == pytest.approx(1.2) and by_name["tiny"]["source"] == "local"
    assert main(["compress", str(env / "mono.wav"), "--model", str(env / "nope" / "m.safetensors")]) == 1
    assert "not found" in capsys.readouterr().err


def test_threads_option_sets_torch_threads_and_refuses_zero(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        src = str(env / "mono.wav")
        out = str(env / "t.rcq")
        assert main(["compress", src, "-o", out, "--model", "tiny", "--threads", "2", "-q"]) == 0
        assert torch.get_num_threads() == 2
        assert main(["decompress", out, "-o", str(env / "t.wav"), "-q"]) == 0  # default: one thread
        assert torch.get_num_threads() == 1
        assert main(["compress", src, "-o", out, "--model", "tiny", "--threads", "0", "--force"]) == 2
        assert "at least 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


# -- one output per input, notices, odd inputs ----------------------------------------------------------
def test_two_inputs_for_one_output_are_refused_before_writing(env: Path, capsys) -> None:
    sf.write(env / "mono.flac", tone(1.0, 16000), 16000)  # mono.wav and mono.flac -> mono.rcq
    before = _snapshot(env)
    assert main(["compress", str(env / "mono.wav"), str(env / "mono.flac"), "--model", "tiny", "--force"]) == 2
    err = capsys.readouterr().err
    assert "mono.wav" in err and "mono.flac" in err and "mono.rcq" in err
    assert _snapshot(env) == before
    (env / "a").mkdir()
    (env / "b").mkdir()
    sf.write(env / "a" / "x.wav", tone(0.5, 16000), 16000)
    sf.write(env / "b" / "x.wav", tone(0.5, 16000), 16000)
    argv = ["compress", str(env / "a" / "x.wav"), str(env / "b" / "x.wav"), "-o", str(env / "out"), "--model", "tiny"]
    assert main(argv) == 2 and not (env / "out").exists()
    capsys.readouterr()


def test_file_like_output_for_several_inputs_is_a_usage_error(env: Path, capsys) -> None:
    argv = ["compress", str(env / "mono.wav"), str(env / "stereo.flac"), "-o", str(env / "out.rcq"), "--model", "tiny"]
    assert main(argv) == 2
    assert "several inputs" in capsys.readouterr().err and not (env / "out.rcq").exists()


def test_truncated_wav_is_an_error(env: Path, capsys) -> None:
    data = (env / "mono.wav").read_bytes()
    (env / "cut.wav").write_bytes(data[: len(data) // 2])  # header still promises 1.5 s
    assert main(["compress", str(env / "cut.wav"), "--model", "tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "truncated WAV" in err and "cut.wav" in err
    assert not (env / "cut.rcq").exists()


def test_fifo_input_is_refused_without_blocking(env: Path, tmp_path: Path) -> None:
    import os

    fifo = env / "pipe.wav"
    os.mkfifo(fifo)
    # in a child: a blocking open would hang it (and the test would time out) instead of failing
    cmd = [sys.executable, "-m", "rotcodec.cli.main", "compress", str(fifo), "--model", "tiny"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "not a regular file" in proc.stderr
    assert not (env / "pipe.rcq").exists()


def test_info_checks_the_body(env: Path, capsys) -> None:
    bad = _corrupt(env, "flipped")
    good = env / "good.rcq"
    assert main(["info", str(good)]) == 0
    assert "chunks" in capsys.readouterr().out
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CRC" in err and bad.name in err
    assert main(["info", "--no-check", "--json", str(bad)]) == 0  # the header alone is fine
    assert json.loads(capsys.readouterr().out)["body"].startswith("not checked")


def test_band_limit_notice_once_and_quiet_hides_it(env: Path, capsys) -> None:
    sf.write(env / "second.flac", tone(0.6, 48000), 48000)
    argv = ["compress", str(env / "stereo.flac"), str(env / "second.flac"), "-o", str(env / "o"), "--model", "tiny"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "16000 Hz" in err and "8 kHz" in err
    assert main(["compress", str(env / "mono.wav"), "--model", "tiny"]) == 0  # 16 kHz input: nothing to say
    assert "note:" not in capsys.readouterr().err
    assert main(["compress", str(env / "stereo.flac"), "--model", "tiny", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_no_progress_bar_in_a_redirected_log(env: Path, capsys) -> None:
    # 31 s: long enough for a bar; stderr is captured, not a terminal
    sf.write(env / "long.wav", tone(31.0, 16000), 16000)
    assert main(["compress", str(env / "long.wav"), "--model", "tiny"]) == 0
    assert main(["decompress", str(env / "long.rcq"), "-o", str(env / "long_out.wav")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err and "s/s" not in err, err


def test_progress_stops_at_the_total() -> None:
    import warnings

    from tqdm import tqdm

    from rotcodec.cli.compress import _advance

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TqdmWarning: clamping frac to range [0, 1]
        with tqdm(total=3.0, file=io.StringIO(), disable=False, mininterval=0) as bar:
            update = _advance(bar)
            for _ in range(31):
                update(0.1)  # 3.1 s of float steps for a 3 s file
            assert bar.n == pytest.approx(3.0) and bar.n <= bar.total


def test_sigterm_cleans_up_like_ctrl_c(tmp_path: Path) -> None:
    import os
    import signal
    import time

    src = tmp_path / "long.wav"
    sf.write(src, tone(40.0, 16000), 16000)
    cmd = [sys.executable, "-m", "rotcodec.cli.main", "compress", str(src), "-q"]  # the shipped model: seconds
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".long.rcq.*.tmp")):  # terminated while writing
        assert proc.poll() is None and time.monotonic() < deadline, "finished before it could be terminated"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, err[-2000:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]  # no output, no temp file


def test_layouts_tell_phase_rows_from_band_gains_by_the_model_config() -> None:
    from rotcodec.bitstream.layout import StreamLayout
    from rotcodec.config import from_dict
    from rotcodec.inference.model import describe_layout
    from rotcodec.models.codec import CodecConfig

    # what `rotcodec info` reads when the model that wrote a file is installed: its JSON config, no weights
    meta = json.loads((Path(__file__).resolve().parents[1] / "rotcodec/pretrained/speech16k.json").read_text())
    config = from_dict(CodecConfig, meta["config"])
    tier = next(i for i, t in enumerate(config.envelopes) if t.phase_harmonics)
    k, bands = config.envelopes[tier].phase_harmonics, config.envelopes[tier].bands
    assert k > 0
    lay = StreamLayout(n_q=3, envelope=tier, pitch_rows=1, envelope_rows=bands + k)
    assert describe_layout(config, lay) == f"n_q 3 + pitch + {bands} band gains + {k} harmonic phases (tier {tier})"
    plain = StreamLayout(n_q=3, envelope=0, pitch_rows=1, envelope_rows=config.envelopes[0].bands)
    assert describe_layout(config, plain) == plain.describe()
    assert describe_layout(config, StreamLayout(n_q=3, pitch_rows=1)) == "n_q 3 + pitch"


def test_a_clean_up_failing_during_an_interrupt_still_exits_as_interrupted(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """A Ctrl-C or SIGTERM whose clean-up raises on the way out (an OSError closing a file, say) is still an
    interrupt: exit 130 and "interrupted", not exit 1 with a per-file error and the next file coded."""
    from rotcodec.inference.model import CodecModel

    def interrupted(*args: object, **kwargs: object) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError(5, "Input/output error") from None  # `from None` hides it, it is still the context

    sf.write(tmp_path / "a.wav", tone(1.0, 16000), 16000)
    sf.write(tmp_path / "b.wav", tone(1.0, 16000), 16000)
    monkeypatch.setattr(CodecModel, "compress_source", interrupted)
    code = main(["compress", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "--model", "speech16k"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "Input/output error" not in err, (code, err)
