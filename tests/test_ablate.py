"""`rotcodec ablate` end to end on the tiny recipe: matched runs, report files, resumability, run planning,
damaged runs."""

import argparse
import json
import shutil
from pathlib import Path

import pytest

from rotcodec.cli.evaluate import register
from rotcodec.cli.main import main
from rotcodec.eval.ablate import AblationError, AblationOptions, RunSpec, plan_runs, run_ablation
from rotcodec.eval.ablation_report import paired_lines
from rotcodec.eval.report import read_csv
from rotcodec.train.loop import train
from rotcodec.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"


def _without_quantizer_choice(cfg: dict) -> dict:
    cfg = json.loads(json.dumps(cfg))
    del cfg["model"]["quantizer"]["estimator"], cfg["model"]["quantizer"]["wiring"]
    return cfg


def test_ablation_end_to_end_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "abl"
    opts = AblationOptions(
        TINY, out, seeds=[0], variants=["rotation-detached", "ste"], overrides=["train.steps=20"], quiet=True
    )
    result = run_ablation(opts)
    assert result.trained == 2
    for name in ("ablation.md", "ablation.csv", "curves.png", "per_stage_usage.png"):
        assert (out / name).stat().st_size > 0, name
    configs = {r.variant: json.loads((out / "runs" / r.name / "config.json").read_text()) for r in result.runs}
    assert configs["rotation-detached"]["model"]["quantizer"]["estimator"] == "rotation"
    assert configs["ste"]["model"]["quantizer"]["estimator"] == "ste"
    # Nothing but the quantizer's estimator/wiring differs between the runs.
    assert _without_quantizer_choice(configs["ste"]) == _without_quantizer_choice(configs["rotation-detached"])
    assert configs["ste"]["train"]["steps"] == 20

    rows = read_csv(out / "ablation.csv")
    assert {r["variant"] for r in rows} == {"rotation-detached", "ste"}
    assert sorted(int(r["n_q"]) for r in rows if r["variant"] == "ste") == [1, 2, 3, 4]  # every bitrate served
    for r in rows:
        assert 0 < float(r["usage_mean"]) <= 1 and float(r["perplexity_mean"]) >= 1
        assert float(r["kbps_measured"]) > float(r["nominal_kbps"])  # stream overhead on top of the payload
        assert r["mel_distance"] and r["si_sdr"] and r["vq3/usage"]
    kbps = {r["n_q"]: float(r["kbps_measured"]) for r in rows if r["variant"] == "ste"}
    assert kbps["1"] < kbps["2"] < kbps["3"] < kbps["4"]
    table = (out / "ablation.md").read_text()
    assert "| rotation-detached |" in table and "| ste |" in table and "## mel_distance" in table
    assert "## Paired per file against ste" in table and "| rotation-detached − ste | nq4 |" in table

    before = (out / "runs" / "ste__seed0" / "metrics.jsonl").read_text()
    again = run_ablation(opts)  # finished runs are neither retrained nor re-evaluated
    assert again.trained == 0
    assert (out / "runs" / "ste__seed0" / "metrics.jsonl").read_text() == before
    assert read_csv(out / "ablation.csv") == rows


def test_plan_runs_matches_seeds_and_sweeps() -> None:
    opts = AblationOptions(
        TINY, "x", seeds=[0, 1], variants=["rotation-chained", "ste"], sweeps=["model.quantizer.n_q=2,4"]
    )
    runs = plan_runs(opts)
    assert len(runs) == 2 * 2 * 2
    assert len({r.name for r in runs}) == len(runs)
    chained = next(
        r for r in runs if r.variant == "rotation-chained" and r.seed == 1 and r.sweep["model.quantizer.n_q"] == "4"
    )
    assert chained.overrides[-3:] == [
        "model.quantizer.estimator=rotation",
        "model.quantizer.wiring=chained",
        "train.seed=1",
    ]
    assert "model.quantizer.n_q=4" in chained.overrides
    with pytest.raises(AblationError, match="unknown variant"):
        plan_runs(AblationOptions(TINY, "x", variants=["rotation-sideways"]))
    with pytest.raises(AblationError, match="--sweep"):
        plan_runs(AblationOptions(TINY, "x", sweeps=["model.quantizer.n_q"]))


def test_cli_ablate_reports_bad_variant_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["ablate", str(TINY), "--out", str(tmp_path), "--variants", "nope"])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown variant") and "\n" not in err


@pytest.mark.parametrize("damage", ["flipped", "pointer"])
def test_cli_ablate_reports_a_damaged_run_not_an_existing_one(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture
) -> None:
    # The run ablate would resume, trained directly so that no evaluation is needed to get there.
    opts = AblationOptions(TINY, tmp_path, seeds=[0], variants=["ste"], overrides=["train.steps=4"])
    (spec,) = plan_runs(opts)
    run = tmp_path / "runs" / spec.name
    train(load_recipe(TINY, [*spec.overrides, "train.checkpoint_every=2", "train.valid_every=1000"]), run, quiet=True)
    if damage == "flipped":
        model = run / "checkpoints" / "step_00000004" / "model.safetensors"
        raw = bytearray(model.read_bytes())
        raw[-10] ^= 0xFF  # tensor data, past the header: only the checksum can tell
        model.write_bytes(bytes(raw))
        expected, way_back = "model.safetensors: checksum mismatch", "step_00000002"
    else:
        (run / "checkpoints" / "latest").write_text("step_00000009\n")
        expected, way_back = "names step_00000009, which is missing", "step_00000004"
    args = ["ablate", str(TINY), "--out", str(tmp_path), "--seeds", "0", "--variants", "ste", "--quiet"]
    code = main([*args, "--set", "train.steps=4"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("rotcodec ablate: error: ") and expected in lines[0]
    assert f"write {way_back} into" in lines[0] and "already holds a run" not in lines[0]


def test_train_only_then_evaluate_exported_runs_from_init(tmp_path: Path) -> None:
    base = tmp_path / "base"
    train(load_recipe(TINY, ["train.steps=2", "train.valid_every=1000"]), base, quiet=True)
    weights = base / "checkpoints" / (base / "checkpoints" / "latest").read_text().strip() / "model"
    out = tmp_path / "abl"
    common = dict(
        seeds=[0],
        variants=["rotation-detached", "ste"],
        overrides=["train.steps=4", "train.init_fresh=[encoder, quantizer]"],
        init=str(weights),
        quiet=True,
    )
    first = run_ablation(AblationOptions(TINY, out, train_only=True, **common))
    assert first.trained == 2 and not (out / "ablation.md").exists()
    assert not any((out / "runs" / r.name / "eval").exists() for r in first.runs)
    # every run records which parts started fresh (test_train checks the weights themselves)
    cfg = json.loads((out / "runs" / "ste__seed0" / "config.json").read_text())
    assert cfg["train"]["init_fresh"] == ["encoder", "quantizer"]
    second = run_ablation(AblationOptions(TINY, out, export_seconds=2.0, **common))
    assert second.trained == 0 and (out / "ablation.md").stat().st_size > 0
    for r in second.runs:
        exported = list((out / "runs" / r.name / "eval" / "export").glob("step_*.json"))
        assert len(exported) == 1, r.name
    rows = read_csv(out / "ablation.csv")
    assert {r["variant"] for r in rows} == {"rotation-detached", "ste"}
    # A run trained elsewhere comes back as its exported model alone: evaluated, not retrained.
    run = out / "runs" / "ste__seed0"
    shutil.rmtree(run / "checkpoints")
    for path in (run / "eval").iterdir():
        if path.is_file():
            path.unlink()
    # ... and gets the code tables it came without, counted on the recipe's data
    exported = next((run / "eval" / "export").glob("step_*.json"))
    assert not json.loads(exported.read_text())["has_code_counts"]  # the tiny recipe's data is generated
    real = [f"data.sources=[{ROOT / 'samples'}]", "data.synthetic=false"]
    common["overrides"] = [*common["overrides"], *real]
    third = run_ablation(AblationOptions(TINY, out, export_seconds=2.0, **common))
    assert third.trained == 0 and not (run / "checkpoints").exists()
    assert read_csv(run / "eval" / "results.csv")
    assert json.loads(exported.read_text())["has_code_counts"]


def test_paired_lines_average_seeds_per_file_then_pair_files() -> None:
    runs = [RunSpec(f"{v}__seed{s}", v, s, {}, []) for v in ("rot", "ste") for s in (0, 1)]

    def rows(offset: float) -> list[dict]:
        return [
            {"file": f"f{i}", "setting": "3", "pesq_wb": 1.0 + i + offset, "stoi": 0.5, "mel_distance": 0.2}
            for i in range(4)
        ]

    # rot is 0.1 (seed 0) and 0.3 (seed 1) better than ste on every file: +0.2 on average, no spread
    per_file = {"rot__seed0": rows(0.1), "rot__seed1": rows(0.3), "ste__seed0": rows(0.0), "ste__seed1": rows(0.0)}
    (line,) = [x for x in paired_lines(per_file, runs) if x.startswith("| rot − ste")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "3" and cells[2].startswith("+0.2 ± ") and cells[2].endswith("(4/4) *")
    assert cells[3].startswith("+0 ± 0 (0/4)") and not cells[3].endswith("*")
