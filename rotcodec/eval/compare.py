"""`rotcodec compare`: per-file paired differences between codec settings of `rotcodec eval` results.

    rotcodec compare results/results.csv --pair rotcodec:6 opus:6 --steps rotcodec 1.5 3 6 12
    rotcodec compare new=runs/eval/results.csv old=docs/results/band_envelope/results.csv \
        --pair new.rotcodec:12 old.rotcodec:12

A side is `CODEC:SETTING` as in results.csv's `codec` and `setting` columns; a results file given as
`NAME=PATH` has its codecs renamed `NAME.CODEC`, so two runs of the same codec can be paired. Only files
scored by both sides count. For each metric: the mean of (A − B) over files ± the 95% half-width of that mean
(Student's t), and on how many files A is better. A gain is significant when the interval excludes zero.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .metrics import HIGHER_IS_BETTER
from .report import mean_ci, read_csv

DEFAULT_METRICS = ("pesq_wb", "stoi", "mel_distance")


class CompareError(ValueError):
    """A results file or side that cannot be compared."""


@dataclass
class Paired:
    """One metric of one pair: mean difference A − B, its 95% half-width, files where A is better, files."""

    metric: str
    mean: float
    half_width: float
    better: int
    files: int

    @property
    def significant(self) -> bool:
        """The interval lies on A's better side of zero."""
        sign = 1.0 if HIGHER_IS_BETTER[self.metric] else -1.0
        return sign * self.mean - self.half_width > 0


def summarise(metric: str, diffs: Sequence[float]) -> Paired:
    """`Paired` statistics of per-file differences A − B of `metric` (finite values)."""
    mean, hw, n = mean_ci(diffs)
    better = sum((d > 0) if HIGHER_IS_BETTER[metric] else (d < 0) for d in diffs)
    return Paired(metric, mean, hw, better, n)


def cell(p: Paired) -> str:
    """One table cell: "mean ± half-width (better/files)", with " *" when significant."""
    return f"{p.mean:+.3g} ± {p.half_width:.2g} ({p.better}/{p.files}){' *' if p.significant else ''}"


def load_rows(sources: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of every `[NAME=]PATH` results file, codecs renamed `NAME.CODEC` where a NAME is given."""
    rows: list[dict[str, Any]] = []
    for source in sources:
        name, sep, path = source.partition("=")
        if not sep:
            name, path = "", source
        if not Path(path).is_file():
            raise CompareError(f"no results file {path}")
        for row in read_csv(Path(path)):
            rows.append({**row, "codec": f"{name}.{row['codec']}" if name else row["codec"]})
    return rows


def _side(rows: Sequence[dict[str, Any]], side: str) -> dict[str, dict[str, Any]]:
    codec, sep, setting = side.rpartition(":")
    if not sep or not codec:
        raise CompareError(f"a side is CODEC:SETTING, got {side!r}")
    found = {r["file"]: r for r in rows if r["codec"] == codec and str(r["setting"]) == setting}
    if not found:
        raise CompareError(f"no rows for codec {codec!r} setting {setting!r}")
    return found


def paired(rows: Sequence[dict[str, Any]], a: str, b: str, metrics: Sequence[str] = DEFAULT_METRICS) -> list[Paired]:
    """Paired statistics of side `a` against side `b` over the files both have."""
    ra, rb = _side(rows, a), _side(rows, b)
    out = []
    for metric in metrics:
        if metric not in HIGHER_IS_BETTER:
            raise CompareError(f"unknown metric {metric!r}; one of {', '.join(HIGHER_IS_BETTER)}")
        diffs = []
        for f in sorted(ra.keys() & rb.keys()):
            x, y = float(ra[f].get(metric, "nan")), float(rb[f].get(metric, "nan"))
            if math.isfinite(x) and math.isfinite(y):
                diffs.append(x - y)
        if not diffs:
            raise CompareError(f"no file has {metric} for both {a} and {b}")
        out.append(summarise(metric, diffs))
    return out


def markdown(pairs: Sequence[tuple[str, str, list[Paired]]]) -> str:
    """A table: one line per pair, one column per metric ("mean ± half-width (better/files)", * significant)."""
    metrics = [p.metric for p in pairs[0][2]]
    lines = ["| A − B | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for a, b, stats in pairs:
        cells = [cell(p) for p in stats]
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    lines.append("\n`*`: the 95% interval excludes zero on A's better side.")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import HelpFormatter

    p = subparsers.add_parser(
        "compare",
        help="paired per-file differences between settings in eval results",
        description="Paired per-file differences between settings of `rotcodec eval` results: mean of A - B "
        "with its 95% interval, and on how many files A is better.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("results", nargs="+", help="results.csv files, optionally NAME=PATH (codecs become NAME.CODEC)")
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"), help="CODEC:SETTING twice")
    p.add_argument(
        "--steps",
        nargs="+",
        action="append",
        default=[],
        metavar="CODEC SETTING",
        help="a codec then its settings in order: pairs each setting with the one before",
    )
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help=f"default: {' '.join(DEFAULT_METRICS)}")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    pairs = [tuple(p) for p in args.pair]
    for codec, *settings in args.steps:
        if len(settings) < 2:
            raise CompareError("--steps needs a codec and at least two settings")
        pairs += [(f"{codec}:{hi}", f"{codec}:{lo}") for lo, hi in zip(settings, settings[1:], strict=False)]
    if not pairs:
        raise CompareError("nothing to compare: give --pair A B or --steps CODEC S1 S2 ...")
    rows = load_rows(args.results)
    print(markdown([(a, b, paired(rows, a, b, args.metrics)) for a, b in pairs]))
    return 0
