"""Evaluation outputs: `results.csv` I/O, mean ± 95% CI summaries (markdown) and quality-vs-bitrate plots.

Rows are plain dicts of strings/numbers, one per file x codec x setting (see `rotcodec.eval.runner`).
Every file is written atomically (temporary file in the same folder, then `os.replace`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rotcodec.eval.metrics import HIGHER_IS_BETTER
from rotcodec.outputs import atomic_path

# Column order of results.csv; metric columns come after these, unknown extras last.
BASE_COLUMNS = (
    "file",
    "codec",
    "setting",
    "nominal_kbps",
    "n_q",
    "kbps_measured",
    "kbps_file",
    "bytes",
    "duration_s",
    "encode_seconds",
    "decode_seconds",
    "encode_rtf",
    "decode_rtf",
)
METRIC_COLUMNS = tuple(HIGHER_IS_BETTER)
NOTES_COLUMN = "notes"
# Shown in summaries and plots, in this order, when present.
SUMMARY_METRICS = (
    "kbps_measured",
    "si_sdr",
    "mel_distance",
    "mrstft",
    "bandwidth_ratio",
    "flatness_error",
    "pesq_wb",
    "stoi",
    "periodicity_error",
    "pitch_error",
    "dnsmos_ovrl",
)
TIMING_METRICS = ("encode_rtf", "decode_rtf")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # published readable as the umask allows (mkstemp alone makes 0600)
        write(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def columns_for(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Stable column order: BASE_COLUMNS, known metrics, other keys (first-seen order), then notes."""
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen]
    known = [c for c in (*BASE_COLUMNS, *METRIC_COLUMNS) if c in seen]
    rest = [c for c in seen if c not in known and c != NOTES_COLUMN]
    return known + rest + ([NOTES_COLUMN] if NOTES_COLUMN in seen else [])


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write rows as CSV atomically (NaN as an empty cell)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns_for(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV written by `write_csv` (values as strings); [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def as_float(value: Any) -> float:
    """A CSV cell as float (empty or unparsable -> NaN)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the Student-t confidence interval, count) over the finite values.

    Half-width is NaN for fewer than two values; mean is NaN when nothing is finite.
    """
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), 0
    if x.size == 1:
        return float(x[0]), float("nan"), 1
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()), half, int(x.size)


def fmt_pm(mean: float, spread: float, digits: int = 3) -> str:
    """'m ± s' with `digits` significant digits; '–' for a NaN mean, 'm' alone for a NaN spread."""
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(spread):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {spread:.2g}"


def _group_key(row: dict[str, Any]) -> tuple[str, float, str]:
    nominal = as_float(row.get("nominal_kbps"))
    # No nominal rate (the quantizer-bypassed ceiling): inf, so that its rows share one key (NaN != NaN)
    # and sort after the coded settings.
    return str(row["codec"]), nominal if math.isfinite(nominal) else math.inf, str(row["setting"])


def grouped(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, float, str], list[dict[str, Any]]]:
    """Rows grouped by (codec, nominal kbps, setting), sorted by codec then bitrate (none: inf, last)."""
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_group_key(row), []).append(row)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])))


def present_metrics(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    """The metric names that have at least one finite value in `rows`."""
    return [m for m in names if any(math.isfinite(as_float(r.get(m))) for r in rows)]


def summary_markdown(rows: Sequence[dict[str, Any]], title: str = "Quality versus bitrate") -> str:
    """Markdown table: one line per codec and nominal setting, mean ± 95% CI over files per metric."""
    metrics = present_metrics(rows, (*SUMMARY_METRICS, *TIMING_METRICS))
    arrows = {m: (" ↑" if HIGHER_IS_BETTER[m] else " ↓") if m in HIGHER_IS_BETTER else "" for m in metrics}
    lines = [
        f"# {title}",
        "",
        "Mean ± 95% confidence half-width (Student t) over files. `kbps_measured` comes from the compressed",
        "size (rotcodec: the whole .rcq stream). RTF = processing seconds / audio seconds (lower is faster).",
        "DNSMOS columns appear only when the optional `speechmos` package is installed.",
        "",
        "| codec | setting | requested kbps | files | " + " | ".join(f"{m}{arrows[m]}" for m in metrics) + " |",
        "|" + "---|" * (4 + len(metrics)),
    ]
    for (codec, nominal, setting), group in grouped(rows).items():
        cells = []
        for m in metrics:
            mean, half, _ = mean_ci(as_float(r.get(m)) for r in group)
            cells.append(fmt_pm(mean, half))
        rate = f"{nominal:g}" if math.isfinite(nominal) else "–"
        lines.append(f"| {codec} | {setting} | {rate} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save_figure(fig: Any, path: str | Path) -> None:
    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")

    atomic_write(path, write)


_SWEEP_LABEL = re.compile(r"^nq\d+(?P<side>(?:\+[a-z]+)*)$")  # stage-sweep settings: "nq3+pitch+env"


def line_label(codec: str, setting: str) -> str:
    """Plot line of a row: the codec, and for stage-sweep settings the side rows sent ("rotcodec (pitch+env)"),
    so that sweeps with and without the envelope rows are separate lines."""
    m = _SWEEP_LABEL.match(setting)
    side = m.group("side").lstrip("+") if m else ""
    return f"{codec} ({side})" if side else codec


def plot_quality_vs_bitrate(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """One subplot per metric, one line per codec (and side-row variant of a stage sweep, `line_label`):
    mean (± 95% CI bars) against mean measured kbps; rows without a rate (the ceiling) are not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = present_metrics(rows, [m for m in SUMMARY_METRICS if m != "kbps_measured"]) or ["si_sdr"]
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.4 * nrows), squeeze=False)
    groups = grouped(rows)
    codecs = list(dict.fromkeys(line_label(c, s) for c, _, s in groups))
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for codec in codecs:
            pts = []
            for (c, _, s), group in groups.items():
                if line_label(c, s) != codec:
                    continue
                kbps = mean_ci(as_float(r.get("kbps_measured")) for r in group)[0]
                mean, half, _ = mean_ci(as_float(r.get(metric)) for r in group)
                if math.isfinite(kbps) and math.isfinite(mean):
                    pts.append((kbps, mean, half if math.isfinite(half) else 0.0))
            if pts:
                pts.sort()
                x, y, e = zip(*pts, strict=True)
                ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=codec)
        direction = HIGHER_IS_BETTER.get(metric)
        arrow = "" if direction is None else " (higher better)" if direction else " (lower better)"
        ax.set_title(metric + arrow, fontsize=10)
        ax.set_xlabel("measured kbps")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), bbox_to_anchor=(0.5, 1.04))
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def save_figure(fig: Any, path: str | Path) -> None:
    """Save a matplotlib figure as PNG atomically."""
    _save_figure(fig, path)


def _curve(records: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = sorted((r["step"], r[key]) for r in records if key in r and "step" in r)
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pts, strict=True)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def plot_training_curves(
    groups: dict[str, list[Sequence[dict[str, Any]]]],
    path: str | Path,
    keys: Sequence[str] = ("loss/total", "vq/usage_mean"),
) -> None:
    """One subplot per metrics.jsonl key (vs step), one line per group: the mean over its runs (seeds)
    on the steps they share, shaded ± std when there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for label, runs in groups.items():
            curves = [_curve(r, key) for r in runs]
            curves = [c for c in curves if c[0].size]
            if not curves:
                continue
            common = sorted(set.intersection(*[set(c[0].tolist()) for c in curves]))
            if not common:
                continue
            ys = np.stack([np.interp(common, s, v) for s, v in curves])
            mean = ys.mean(0)
            ax.plot(common, mean, label=label)
            if ys.shape[0] > 1:
                std = ys.std(0, ddof=1)
                ax.fill_between(common, mean - std, mean + std, alpha=0.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key.startswith("loss"):
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_stage_stats(groups: dict[str, list[dict[str, Any]]], path: str | Path) -> None:
    """Per-stage codebook usage and perplexity (mean ± std over a group's runs), one line per group.

    Each group holds stats dicts with per-stage lists "usage" and "perplexity"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.6), squeeze=False)
    for ax, key in zip(axes[0], ("usage", "perplexity"), strict=True):
        for label, stats in groups.items():
            ys = np.asarray([s[key] for s in stats], dtype=np.float64)
            if ys.size == 0:
                continue
            stages = np.arange(ys.shape[1])
            err = ys.std(0, ddof=1) if ys.shape[0] > 1 else None
            ax.errorbar(stages, ys.mean(0), yerr=err, marker="o", capsize=3, label=label)
        ax.set_title(f"codebook {key} per RVQ stage", fontsize=10)
        ax.set_xlabel("stage")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of codes used")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
