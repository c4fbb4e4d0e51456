"""The codec-level diagnosis in `rotcodec eval`: stage sweep (with and without the envelope rows), the
quantizer-bypassed ceiling, the summary's diagnosis table and the CLI flags. Tiny models, generated audio."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import pitch_codec, vowel

from rotcodec.cli.main import main
from rotcodec.eval.codecs import NeuralCodec
from rotcodec.eval.diagnosis import PERFECT, ceiling_decode, diagnosis_markdown, gap_closed, parse_label
from rotcodec.eval.metrics import evaluate
from rotcodec.eval.report import read_csv
from rotcodec.eval.runner import EvalError, EvalOptions, align_estimate, run_eval, score
from rotcodec.models.codec import Codec
from rotcodec.models.envelope import EnvelopeConfig
from rotcodec.models.io import save_model
from rotcodec.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(channels: int = 1) -> Codec:
    torch.manual_seed(0)
    cfg = dataclasses.replace(load_recipe(ROOT / "recipes" / "tiny.yaml").model, channels=channels)
    return Codec(cfg).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved model files: the tiny recipe (no side rows) and a tiny pitch + envelope codec."""
    root = tmp_path_factory.mktemp("diag")
    save_model(_tiny(), root / "tiny")
    save_model(pitch_codec(envelope=EnvelopeConfig()), root / "pe")
    return {"tiny": root / "tiny", "pe": root / "pe"}


def _items(seconds: float = 0.6) -> list[tuple[str, np.ndarray]]:
    return [(f"v{s}", vowel(16000, seconds, seed=s)[None]) for s in (0, 1)]


@pytest.mark.parametrize("channels", [1, 2])
def test_ceiling_is_decoder_of_embed(channels: int) -> None:
    codec = _tiny(channels)
    x = torch.from_numpy(np.stack([vowel(16000, 0.3, seed=c) for c in range(channels)]))[None]
    x = x[..., :4001]  # not a whole number of frames: padded, then trimmed back
    with torch.no_grad():
        direct = codec.decoder(codec.embed(x))[..., : x.shape[-1]].reshape(x.shape)
        got = ceiling_decode(codec, x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, direct, rtol=0, atol=0)
    # and not the quantized decode: the quantizer really is bypassed
    assert (got - codec.decode(codec.encode(x))[..., : x.shape[-1]]).abs().max() > 1e-4


def test_ceiling_with_pitch_and_envelope_is_forward_with_an_identity_quantizer() -> None:
    """Through the model's own training path with the quantizer replaced by the identity: the harmonic source
    reads z, the pitch row is the tracker's, and `correct_levels` applies the gains measured on that decode."""
    codec = pitch_codec(envelope=EnvelopeConfig())
    x = torch.from_numpy(vowel(16000, 0.5, seed=3))[None, None]

    def identity(z: torch.Tensor, n_q: int | None = None) -> SimpleNamespace:
        codes = torch.zeros(z.shape[0], codec.n_q, z.shape[-1], dtype=torch.long)
        return SimpleNamespace(quantized=z, codes=codes, loss=z.new_zeros(()), stats={})

    with torch.no_grad():
        plain, with_env = ceiling_decode(codec, x, envelope=False), ceiling_decode(codec, x, envelope=True)
        codec.quantizer.forward = identity  # instance attribute: this codec only
        audio = codec(x).audio
        corrected = codec.correct_levels(x, audio)
    torch.testing.assert_close(plain, audio, rtol=0, atol=1e-6)
    torch.testing.assert_close(with_env, corrected, rtol=0, atol=1e-6)
    assert (with_env - plain).abs().max() > 1e-4  # the gains did something


def test_sweep_labels_side_rows_and_collapses_duplicates(models: dict[str, Path]) -> None:
    pe = NeuralCodec(models["pe"])
    both = pe.settings_for_n_q([1, 2, 2], envelope=(0, None))
    assert [label for label, _, _ in both] == ["nq1+pitch+env", "nq2+pitch+env", "nq1+pitch", "nq2+pitch"]
    assert [(s.n_q, s.envelope) for _, _, s in both] == [(1, 0), (2, 0), (1, None), (2, None)]
    assert [label for label, _, _ in pe.ceilings((0, None))] == ["ceiling+pitch+env", "ceiling+pitch"]
    tiny = NeuralCodec(models["tiny"])  # no envelope rows: "both" cannot differ
    assert [label for label, _, _ in tiny.settings_for_n_q(None, (0, None))] == ["nq1", "nq2", "nq3", "nq4"]
    assert [label for label, _, _ in tiny.ceilings((0, None))] == ["ceiling"]
    with pytest.raises(EvalError, match="tier 1"):  # pe has only tier 0
        pe.settings_for_n_q([1], (1,))


def test_stage_sweep_and_ceiling_rows(models: dict[str, Path], tmp_path: Path) -> None:
    items = _items()
    opts = EvalOptions(
        model=models["pe"],
        data=None,
        out=tmp_path,
        stage_sweep=True,
        envelope="both",
        ceiling=True,
        items=items,
        speech=False,
        quiet=True,
    )
    outcome = run_eval(opts)
    assert outcome.computed == len(items) * (4 + 4 + 2)
    rows = read_csv(tmp_path / "results.csv")
    for key, _ in items:
        mine = {r["setting"]: r for r in rows if r["file"] == key}
        for side, env in (("+pitch+env", "True"), ("+pitch", "False")):
            sweep = [mine[f"nq{n}{side}"] for n in range(1, 5)]
            assert [int(r["n_q"]) for r in sweep] == [1, 2, 3, 4]
            assert all(r["envelope"] == env and r["side_rows"] == side[1:] for r in sweep)
            assert all(float(r["latent_error"]) > 0 for r in sweep)
            for key_ in ("nominal_kbps", "kbps_measured", "bytes"):
                values = [float(r[key_]) for r in sweep]
                assert all(b > a for a, b in zip(values, values[1:], strict=False)), (key_, values)
            ceiling = mine[f"ceiling{side}"]
            for empty in ("nominal_kbps", "n_q", "kbps_measured", "kbps_file", "kbps_payload", "bytes"):
                assert ceiling[empty] == "", empty
            assert ceiling["coding"] == "none" and ceiling["envelope"] == env and ceiling["latent_error"] == "0"
            assert math.isfinite(float(ceiling["si_sdr"])) and math.isfinite(float(ceiling["decode_rtf"]))
        # the envelope rows cost bits at every stage count
        assert float(mine["nq1+pitch+env"]["bytes"]) > float(mine["nq4+pitch"]["bytes"])

    # latent_error is the quantized latent's relative error, computed directly
    codec = NeuralCodec(models["pe"]).codec
    key, ref = items[0]
    with torch.no_grad():
        z = codec.embed(torch.from_numpy(ref)[None])
        q = codec.quantizer.decode(codec.quantizer.encode(z, 2))
    (row,) = [r for r in rows if r["file"] == key and r["setting"] == "nq2+pitch"]
    assert float(row["latent_error"]) == pytest.approx(float((z - q).pow(2).sum() / z.pow(2).sum()), rel=1e-4)

    # The ceiling row's scores are those of the directly computed decode.
    with torch.no_grad():
        direct = ceiling_decode(codec, torch.from_numpy(ref)[None], envelope=True)[0].numpy()
    expected = score(ref, align_estimate(ref, direct, codec.hop_length)[0], 16000, False, False)
    (row,) = [r for r in rows if r["file"] == key and r["setting"] == "ceiling+pitch+env"]
    for m in ("si_sdr", "mel_distance", "mrstft"):
        assert float(row[m]) == pytest.approx(expected[m], rel=1e-4, abs=1e-6), m

    summary = (tmp_path / "summary.md").read_text()
    assert "| rotcodec | ceiling+pitch+env | – | 2 | – |" in summary
    assert "## Diagnosis: quantizer versus decoder" in summary
    assert "### rotcodec, pitch row + envelope rows sent (2 files)" in summary
    assert "### rotcodec, pitch row sent (2 files)" in summary
    assert "| setting | n_q | latent_error | kbps_measured | si_sdr ↑ |" in summary
    assert summary.count("| input | – | – | – | ∞ | 0 | 0 |") == 2
    assert (tmp_path / "quality_vs_bitrate.png").stat().st_size > 10_000
    assert run_eval(opts).computed == 0  # resumes: the ceiling rows are found again


def test_diagnosis_table_gap_closed() -> None:
    rows = []
    for f, offset in (("a", 0.0), ("b", 0.2)):
        for setting, n_q, sdr, mel in (
            ("nq1", 1, 2.0, 1.0),
            ("nq2", 2, 4.0, 0.8),
            ("nq10", 10, 6.0, 0.6),
            ("ceiling", "", 10.0, 0.5),
        ):
            rows.append(
                {
                    "file": f,
                    "codec": "rc",
                    "setting": setting,
                    "nominal_kbps": "" if n_q == "" else n_q * 0.5,
                    "n_q": n_q,
                    "si_sdr": sdr + offset,
                    "mel_distance": mel + offset,
                }
            )
    rows.append({"file": "c", "codec": "rc", "setting": "nq1", "nominal_kbps": 0.5, "si_sdr": 99.0})  # unpaired
    rows.append({"file": "a", "codec": "rc", "setting": "6", "nominal_kbps": 6, "si_sdr": 50.0})  # --kbps row
    text = diagnosis_markdown(rows)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    cells = [[c.strip("| ") for c in line.split(" | ")] for line in lines]
    assert [c[0] for c in cells[1:]] == ["nq1", "nq2", "nq10", "ceiling", "input"]
    assert "(2 files)" in text  # file c lacks settings: left out
    assert cells[2][2:] == ["4.1 ± 1.3 [25%]", "0.9 ± 1.3 [40%]"]  # (4-2)/(10-2); (0.8-1)/(0.5-1)
    assert cells[1][2].endswith("[0%]") and cells[3][2].endswith("[50%]") and "[" not in cells[4][2]
    assert lines[-1] == "| input | – | ∞ | 0 |"
    assert diagnosis_markdown([r for r in rows if r["setting"] == "6"]) == ""
    assert gap_closed(3.0, 2.0, 2.0) != gap_closed(3.0, 2.0, 2.0)  # no span: NaN
    assert parse_label("nq12+pitch+env") == (12, "+pitch+env") and parse_label("ceiling") == (None, "")
    assert parse_label("12") is None and parse_label("nq") is None


def test_perfect_is_the_reference_against_itself() -> None:
    x = vowel(16000, 2.0, seed=5)[None]
    values = evaluate(x, x, 16000, speech=True).values
    for name, ideal in PERFECT.items():
        if math.isinf(ideal):
            assert values[name] == ideal, name
        else:
            assert values[name] == pytest.approx(ideal, abs=2e-3), name


def _eval_argv(model: Path | None, data: Path, out: Path, *extra: str) -> list[str]:
    base = ["eval", "--data", str(data), "--out", str(out), "--quiet", "--music", "--max-seconds", "0.5"]
    return base + (["--model", str(model)] if model else []) + list(extra)


@pytest.mark.parametrize(
    ("extra", "message", "with_model"),
    [
        (["--stage-sweep", "--kbps", "3"], "--kbps cannot be combined", True),
        (["--n-q", "2", "--kbps", "3"], "--kbps cannot be combined", True),
        (["--no-model", "--ceiling", "--baselines", "opus"], "--ceiling needs a model", False),
        (["--no-model", "--stage-sweep", "--baselines", "opus"], "--stage-sweep needs a model", False),
        (["--no-model", "--kbps", "3", "--baselines", "opus"], "--kbps needs a model", False),
        (["--no-model"], "nothing else to evaluate", False),
        (["--no-model"], "contradict", True),
        (["--envelope", "off"], "--envelope applies to", True),
        (["--stage-sweep", "--envelope", "sometimes"], "invalid choice", True),
        (["--n-q", "9"], "--n-q must be in 1..4", True),
    ],
)
def test_cli_bad_combinations_exit_2(
    models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
    with_model: bool,
) -> None:
    data = tmp_path / "x.wav"
    sf.write(data, vowel(16000, 0.5), 16000)
    out = tmp_path / "out"
    assert main(_eval_argv(models["tiny"] if with_model else None, data, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    if "invalid choice" in message:  # argparse's own: usage, then the one error line
        err = err.splitlines()[-1]
    # "rotcodec eval: error: ..." (usage), "error: ..." (EvalError, as `rotcodec eval` has always printed it)
    assert "error: " in err and message in err and "\n" not in err
    assert not out.exists()


def test_cli_stage_sweep_and_ceiling(models: dict[str, Path], tmp_path: Path) -> None:
    sf.write(tmp_path / "x.wav", vowel(16000, 0.5), 16000)
    out = tmp_path / "out"
    argv = _eval_argv(models["tiny"], tmp_path / "x.wav", out, "--stage-sweep", "--n-q", "1", "3", "--ceiling")
    assert main([*argv, "--envelope", "both"]) == 0  # no envelope rows in this model: one row each
    rows = read_csv(out / "results.csv")
    assert [(r["setting"], r["n_q"]) for r in rows] == [("nq1", "1"), ("nq3", "3"), ("ceiling", "")]
    assert "### rotcodec, no side rows (1 file)" in (out / "summary.md").read_text()


def test_eval_without_model_scores_the_default_model(tmp_path: Path) -> None:
    """`rotcodec eval --data D --kbps 3` scores speech16k, as `rotcodec compress` would use it."""
    data = tmp_path / "x.wav"
    sf.write(data, vowel(16000, 1.0), 16000)
    out = tmp_path / "out"
    assert main(["eval", "--data", str(data), "--out", str(out), "--kbps", "3", "--quiet", "--music"]) == 0
    rows = read_csv(out / "results.csv")
    assert [(r["codec"], r["setting"]) for r in rows] == [("rotcodec", "3")]
    assert int(rows[0]["n_q"]) >= 1 and float(rows[0]["kbps_measured"]) > 0
