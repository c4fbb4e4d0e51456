"""The `rotcodec ablate` report: ablation.md tables (mean ± std over seeds) from per-run rows and statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rotcodec.eval.compare import cell, summarise
from rotcodec.eval.report import as_float, fmt_pm

if TYPE_CHECKING:
    from rotcodec.eval.ablate import RunSpec

AUDIO_METRICS = (
    "mel_distance",
    "mrstft",
    "si_sdr",
    "pesq_wb",
    "stoi",
    "periodicity_error",
    "pitch_error",
    "kbps_measured",
)
STAT_KEYS = ("usage_mean", "perplexity_mean", "quant_error_mean", "quant_error_total", "final_loss")
PAIRED_METRICS = ("pesq_wb", "stoi", "mel_distance")


def group_name(spec: RunSpec) -> str:
    """Runs that differ only in the seed share a group (a table line, a plot line)."""
    return spec.name.rsplit("__seed", 1)[0]


def nanmean(values: Sequence[float]) -> float:
    x = [v for v in values if math.isfinite(v)]
    return float(np.mean(x)) if x else float("nan")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else float("nan")


def _setting_order(setting: str) -> tuple[float, str]:
    """Bitrates ("1.5") by value, stage counts ("nq3") by count, after them."""
    rate = as_float(setting)
    if math.isfinite(rate):
        return rate, ""
    digits = "".join(c for c in setting if c.isdigit())
    return 1e6 + (int(digits) if digits else 0), setting


def paired_lines(per_file: dict[str, list[dict[str, Any]]], runs: list[RunSpec]) -> list[str]:
    """Markdown lines: every group against the reference group (`ste` when it ran, else the last), paired
    per file. A file's difference is A − B averaged over the seeds both groups ran (same seed = same data
    order and initial weights); the interval is the 95% Student-t half-width over files."""
    groups: dict[str, dict[int, str]] = {}
    for r in runs:
        groups.setdefault(group_name(r), {})[r.seed] = r.name
    names = list(groups)
    if len(names) < 2:
        return []
    ref = "ste" if "ste" in groups else names[-1]

    def table(run: str) -> dict[tuple[str, str], dict[str, Any]]:
        return {(str(x["setting"]), str(x["file"])): x for x in per_file.get(run, [])}

    tables = {run: table(run) for seeds in groups.values() for run in seeds.values()}
    settings = sorted({k[0] for t in tables.values() for k in t}, key=_setting_order)
    lines = [
        "",
        f"## Paired per file against {ref}",
        "",
        "A − B per file, averaged over the seeds both ran, then mean ± 95% interval over files "
        "(files where A is better; `*`: the interval excludes zero on A's better side).",
        "",
        "| A − B | setting | " + " | ".join(PAIRED_METRICS) + " |",
        "|---|---|" + "---|" * len(PAIRED_METRICS),
    ]
    for group in names:
        if group == ref:
            continue
        seeds = sorted(groups[group].keys() & groups[ref].keys())
        for setting in settings:
            cells = []
            for metric in PAIRED_METRICS:
                by_file: dict[str, list[float]] = {}
                for seed in seeds:
                    a, b = tables[groups[group][seed]], tables[groups[ref][seed]]
                    for key in a.keys() & b.keys():
                        if key[0] != setting:
                            continue
                        d = as_float(a[key].get(metric)) - as_float(b[key].get(metric))
                        if math.isfinite(d):
                            by_file.setdefault(key[1], []).append(d)
                diffs = [float(np.mean(v)) for v in by_file.values()]
                cells.append(cell(summarise(metric, diffs)) if diffs else "–")
            lines.append(f"| {group} − {ref} | {setting} | " + " | ".join(cells) + " |")
    return lines


def ablation_markdown(
    rows: list[dict[str, Any]],
    runs: list[RunSpec],
    stats: dict[str, dict],
    per_file: dict[str, list[dict[str, Any]]] | None = None,
) -> str:
    groups: dict[str, list[RunSpec]] = {}
    for r in runs:
        groups.setdefault(group_name(r), []).append(r)
    seeds = sorted({r.seed for r in runs})
    lines = [
        "# Ablation: rotation trick vs straight-through estimator",
        "",
        f"Matched runs (same recipe, data order and step budget); mean ± std over seeds {seeds}.",
        "Codebook statistics are measured on the evaluation files with all stages active; audio metrics",
        "come from the real .rcq bitstream at each bitrate. ↑ higher is better, ↓ lower is better.",
        "",
        "## Codebook statistics",
        "",
        "| run | usage ↑ | perplexity ↑ | quant. error (stage mean) ↓ | quant. error (total) ↓ | final train loss ↓ |",
        "|---|---|---|---|---|---|",
    ]
    for group, specs in groups.items():
        cells = [fmt_pm(*mean_std([stats[s.name][k] for s in specs])) for k in STAT_KEYS]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    settings = sorted({(as_float(r["nominal_kbps"]), r["setting"]) for r in rows})
    for metric in AUDIO_METRICS:
        if not any(math.isfinite(as_float(r.get(metric))) for r in rows):
            continue
        arrow = {"si_sdr": " ↑", "pesq_wb": " ↑", "stoi": " ↑", "kbps_measured": ""}.get(metric, " ↓")
        lines += ["", f"## {metric}{arrow}", "", "| run | " + " | ".join(f"{k:g} kbps" for k, _ in settings) + " |"]
        lines.append("|---|" + "---|" * len(settings))
        for group, specs in groups.items():
            names = {s.name for s in specs}
            cells = []
            for _, setting in settings:
                per_seed = [as_float(r.get(metric)) for r in rows if r["run"] in names and r["setting"] == setting]
                cells.append(fmt_pm(*mean_std(per_seed)))
            lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines += paired_lines(per_file or {}, runs)
    return "\n".join(lines) + "\n"
