"""`rotcodec compare`: paired per-file statistics between settings of eval results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rotcodec.cli.main import main
from rotcodec.eval.compare import CompareError, load_rows, paired
from rotcodec.eval.report import write_csv


def _results(path: Path, gain: float, noise: float, seed: int = 0) -> Path:
    """Two settings of one codec on 12 files: setting "hi" scores `gain` PESQ-WB above "lo" plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(12):
        base = 2.0 + 0.3 * rng.standard_normal()
        for setting, pesq in (("lo", base), ("hi", base + gain + noise * rng.standard_normal())):
            rows.append(
                {
                    "file": f"f{i}.wav",
                    "codec": "rotcodec",
                    "setting": setting,
                    "pesq_wb": pesq,
                    "stoi": 0.9,
                    "mel_distance": 0.3 - (0.01 if setting == "hi" else 0.0),
                }
            )
    write_csv(rows, path)
    return path


def test_paired_statistics_match_a_direct_computation(tmp_path: Path) -> None:
    rows = load_rows([str(_results(tmp_path / "r.csv", gain=0.2, noise=0.05))])
    pesq, stoi, mel = paired(rows, "rotcodec:hi", "rotcodec:lo")
    hi = np.array([float(r["pesq_wb"]) for r in rows if r["setting"] == "hi"])
    lo = np.array([float(r["pesq_wb"]) for r in rows if r["setting"] == "lo"])
    d = hi - lo
    assert pesq.mean == pytest.approx(d.mean())
    assert pesq.half_width == pytest.approx(2.2010 * d.std(ddof=1) / np.sqrt(12), rel=1e-3)  # t(11) quantile
    assert pesq.files == 12 and pesq.better == int((d > 0).sum()) and pesq.significant
    assert mel.significant and mel.better == 12  # lower is better
    assert not stoi.significant and stoi.better == 0  # a tie everywhere


def test_a_noisy_gain_is_not_significant(tmp_path: Path) -> None:
    rows = load_rows([str(_results(tmp_path / "r.csv", gain=0.0, noise=0.3, seed=3))])
    (pesq,) = paired(rows, "rotcodec:hi", "rotcodec:lo", ["pesq_wb"])
    assert not pesq.significant and abs(pesq.mean) < pesq.half_width


def test_cli_steps_and_named_files(tmp_path: Path, capsys) -> None:
    a, b = _results(tmp_path / "a.csv", 0.2, 0.05), _results(tmp_path / "b.csv", 0.1, 0.05, seed=1)
    assert main(["compare", str(a), "--steps", "rotcodec", "lo", "hi"]) == 0
    assert "| rotcodec:hi − rotcodec:lo |" in capsys.readouterr().out
    assert main(["compare", f"new={a}", f"old={b}", "--pair", "new.rotcodec:hi", "old.rotcodec:hi"]) == 0
    assert "new.rotcodec:hi − old.rotcodec:hi" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pair", "rotcodec:hi", "opus:6"], "no rows for codec 'opus'"),
        (["--pair", "rotcodec-hi", "rotcodec:lo"], "CODEC:SETTING"),
        ([], "nothing to compare"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    path = _results(tmp_path / "r.csv", 0.2, 0.05)
    assert main(["compare", str(path), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_missing_results_file(tmp_path: Path) -> None:
    with pytest.raises(CompareError, match="no results file"):
        load_rows([str(tmp_path / "nope.csv")])
