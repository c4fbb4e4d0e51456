"""The `rotcodec ablate` report: ablation.md tables (mean ± std over seeds) from per-run rows and statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

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


def ablation_markdown(rows: list[dict[str, Any]], runs: list[RunSpec], stats: dict[str, dict]) -> str:
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
    return "\n".join(lines) + "\n"
