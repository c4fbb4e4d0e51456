"""`rotcodec eval` end to end: a tiny random codec and Opus on generated audio, resumability, CSV/report."""

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.cli.evaluate import register
from rotcodec.eval.report import mean_ci, read_csv, write_csv
from rotcodec.eval.runner import EvalError, EvalOptions, find_eval_files, parse_baseline_kbps, run_eval
from rotcodec.models.codec import Codec
from rotcodec.models.io import save_model
from rotcodec.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
needs_opus = pytest.mark.skipif(shutil.which("opusenc") is None, reason="opus-tools not installed")


def _speechy(seconds: float, sr: int, seed: int) -> np.ndarray:
    """A vowel-like harmonic signal with a syllable envelope (PESQ and STOI accept it as speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 20 * np.sin(2 * np.pi * 0.7 * t) + 10 * seed
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = 0.5 * (1 + np.sin(2 * np.pi * 3.0 * t)) ** 2
    return (0.2 * x * env / np.abs(x).max() + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    import torch

    torch.manual_seed(0)
    save_model(Codec(load_recipe(ROOT / "recipes" / "tiny.yaml").model), root / "model" / "tiny")
    data = root / "data"
    data.mkdir()
    sf.write(data / "a.wav", _speechy(1.5, 16000, 0), 16000)
    stereo = np.stack([_speechy(1.5, 22050, 1), _speechy(1.5, 22050, 2)], axis=1)
    sf.write(data / "b.flac", stereo, 22050)  # other rate and stereo: resampled and mixed to 16 kHz mono
    return root / "model" / "tiny", data


@needs_opus
def test_eval_end_to_end_and_resume(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = setup
    out = tmp_path / "out"
    opts = EvalOptions(
        model=model, data=data, out=out, kbps=[1.5, 3.0], baselines=["opus"], baseline_kbps={"opus": [6, 12]}
    )
    seen: list[dict] = []
    outcome = run_eval(opts, on_row=seen.append)
    assert outcome.computed == len(seen) == 2 * (2 + 2)
    rows = read_csv(out / "results.csv")
    assert len(rows) == 8
    assert {(r["codec"], r["setting"]) for r in rows} == {
        ("rotcodec", "1.5"),
        ("rotcodec", "3"),
        ("opus", "6"),
        ("opus", "12"),
    }
    for r in rows:
        for m in ("si_sdr", "mel_distance", "mrstft", "encode_rtf", "decode_rtf"):
            assert np.isfinite(float(r[m])), (m, r)
        assert float(r["duration_s"]) == pytest.approx(1.5, abs=1e-3)
        if r["codec"] == "opus":
            assert float(r["kbps_measured"]) == pytest.approx(float(r["nominal_kbps"]), rel=0.05)
            assert float(r["pesq_wb"]) > 1.0 and 0.0 < float(r["stoi"]) <= 1.0
        else:
            # The codec's rate is the whole .rcq stream: bytes * 8 / seconds, a bit above the payload rate.
            by_size = int(r["bytes"]) * 8 / float(r["duration_s"]) / 1000
            assert float(r["kbps_measured"]) == pytest.approx(by_size, rel=1e-4)
            assert float(r["kbps_payload"]) <= float(r["kbps_measured"]) < float(r["kbps_payload"]) * 1.5
    opus = {r["setting"]: float(r["si_sdr"]) for r in rows if r["codec"] == "opus" and r["file"].endswith("a.wav")}
    assert opus["12"] > opus["6"]  # more bits, better waveform match
    summary = (out / "summary.md").read_text()
    assert "| opus | 12 | 12 | 2 |" in summary and "| rotcodec | 1.5 | 1.5 | 2 |" in summary
    png = (out / "quality_vs_bitrate.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    seen.clear()
    again = run_eval(opts, on_row=seen.append)  # everything is in results.csv: nothing recomputed
    assert again.computed == 0 and not seen and len(read_csv(out / "results.csv")) == 8

    opts.baseline_kbps = {"opus": [6, 8, 12]}  # a new setting: only its rows are computed
    assert run_eval(opts, on_row=seen.append).computed == 2
    assert {r["setting"] for r in seen} == {"8"}

    # A results.csv written before a metric existed: its rows are computed again, not left without the column.
    old = read_csv(out / "results.csv")
    write_csv([{k: v for k, v in r.items() if k != "pitch_error"} for r in old], out / "results.csv")
    seen.clear()
    assert run_eval(opts, on_row=seen.append).computed == len(old) == 10
    rows = read_csv(out / "results.csv")
    assert len(rows) == 10 and all("pitch_error" in r for r in rows)
    assert all(np.isfinite(float(r["pitch_error"])) for r in rows if r["codec"] == "opus")


def test_cli_eval_codec_only_and_errors(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model, data = setup
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "eval",
            "--model",
            str(model),
            "--data",
            str(data),
            "--kbps",
            "6",
            "--out",
            str(tmp_path / "o"),
            "--max-files",
            "1",
            "--max-seconds",
            "1.0",
            "--quiet",
            "--music",
        ]
    )
    assert args.func(args) == 0
    (row,) = read_csv(tmp_path / "o" / "results.csv")
    # all 4 stages are 6 kbps of payload: with the header and records (spread over 10 s) 3 fit
    assert row["n_q"] == "3" and "pesq_wb" not in row and float(row["duration_s"]) == pytest.approx(1.0)
    bad = parser.parse_args(
        ["eval", "--model", str(model), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]
    )
    assert bad.func(bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --data") and "\n" not in err
    with pytest.raises(EvalError, match="cannot load model"):
        run_eval(EvalOptions(model=tmp_path / "missing", data=data, out=tmp_path / "y"))
    with pytest.raises(EvalError):
        parse_baseline_kbps(["opus:6"])
    assert parse_baseline_kbps(["opus=6,8", "codec2=3.2"]) == {"opus": [6.0, 8.0], "codec2": [3.2]}
    assert [Path(p).name for p in find_eval_files(data)] == ["a.wav", "b.flac"]


def test_missing_encoder_names_the_package(
    setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rotcodec.eval.baselines import MissingEncoderError

    model, data = setup
    monkeypatch.setenv("PATH", str(tmp_path))  # no codec tools on PATH
    with pytest.raises(MissingEncoderError, match="codec2"):
        run_eval(EvalOptions(model=None, data=data, out=tmp_path / "o", baselines=["codec2"]))
    assert not (tmp_path / "o" / "results.csv").exists()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=30))
def test_mean_ci_brackets_the_mean_and_shrinks_with_repeats(values: list[float]) -> None:
    mean, half, n = mean_ci(values)
    assert n == len(values) and mean == pytest.approx(float(np.mean(values)), abs=1e-6)
    assert half >= 0
    _, half4, _ = mean_ci(values * 4)
    assert half4 <= half + 1e-9


def test_csv_round_trip_keeps_columns_and_blanks_nan(tmp_path: Path) -> None:
    rows = [{"file": "a", "codec": "x", "setting": "1", "si_sdr": float("nan"), "extra": 3, "notes": "n"}]
    write_csv(rows, tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as f:
        header = next(csv.reader(f))
    assert header == ["file", "codec", "setting", "si_sdr", "extra", "notes"]
    assert read_csv(tmp_path / "r.csv") == [
        {"file": "a", "codec": "x", "setting": "1", "si_sdr": "", "extra": "3", "notes": "n"}
    ]


def test_split_takes_one_split_of_a_manifest(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", _speechy(0.5, 16000, 0), 16000)
    manifest = tmp_path / "m.tsv"
    rows = ["path\tduration\tsample_rate\tchannels\tsplit\tspeaker"]
    rows += [f"{n}.wav\t0.5\t16000\t1\t{s}\tx" for n, s in (("a", "train"), ("b", "test"), ("c", "test"))]
    manifest.write_text("\n".join(rows) + "\n")
    assert [Path(p).name for p in find_eval_files(manifest, split="test")] == ["b.wav", "c.wav"]
    assert len(find_eval_files(manifest)) == 3
    with pytest.raises(EvalError, match="no files of split 'valid'"):
        find_eval_files(manifest, split="valid")
    with pytest.raises(EvalError, match="splits come from a manifest"):
        find_eval_files(tmp_path, split="test")
