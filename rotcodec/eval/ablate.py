"""`rotcodec ablate`: matched training runs that differ only in the quantizer's gradient estimator/wiring.

Every run uses the same recipe, step budget, data (order is fixed by `data.seed`) and, per seed, the same
`train.seed`; only `model.quantizer.estimator` / `model.quantizer.wiring` (and any `--sweep` key) change.
Variants (`VARIANTS`): "rotation-detached", "rotation-chained", "ste-detached", "ste-chained" and "ste"
(= "ste-chained": the usual EnCodec-style straight-through RVQ, whose Jacobian is exactly the identity).

Each finished model is evaluated on the recipe's validation files (or `eval_data`) at every bitrate it
serves, through the real bitstream (`rotcodec.eval.runner`), plus codebook statistics per stage measured on
the same files. Outputs in OUT: runs/NAME/ (training run + eval/results.csv + stats.json), ablation.csv
(one row per run and bitrate), ablation.md (mean ± std over seeds), curves.png, per_stage_usage.png.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rotcodec.eval.ablation_report import AUDIO_METRICS, STAT_KEYS, ablation_markdown, group_name, nanmean
from rotcodec.eval.report import as_float, atomic_write_text, plot_stage_stats, plot_training_curves, write_csv

VARIANTS: dict[str, dict[str, str]] = {
    "rotation-detached": {"estimator": "rotation", "wiring": "detached"},
    "rotation-chained": {"estimator": "rotation", "wiring": "chained"},
    "ste-detached": {"estimator": "ste", "wiring": "detached"},
    "ste-chained": {"estimator": "ste", "wiring": "chained"},
    "ste": {"estimator": "ste", "wiring": "chained"},
}


class AblationError(ValueError):
    """Bad ablation input: unknown variant, malformed --sweep, a recipe that does not load."""


@dataclass
class AblationOptions:
    """recipe: YAML path; overrides: `key=value` for every run; sweeps: `key=v1,v2` (cartesian product);
    kbps: evaluation bitrates (default: n_q = 1..N); max_files/max_seconds bound the evaluation set.
    init: every run starts from this model file's weights (`rotcodec train --init`; with the recipe's
    `train.init_fresh`, some parts start fresh). export_seconds: evaluate each run as `rotcodec export` ships
    it, with code tables counted on that many seconds of the recipe's training data (what `--kbps` plans
    with); 0 evaluates the checkpoint itself. train_only: train the planned runs, evaluate nothing (runs
    spread over machines or processes; a later call without it evaluates and reports)."""

    recipe: str | Path
    out: str | Path
    seeds: Sequence[int] = (0, 1, 2)
    variants: Sequence[str] = ("rotation-detached", "rotation-chained", "ste")
    overrides: Sequence[str] = ()
    sweeps: Sequence[str] = ()
    eval_data: str | Path | None = None
    kbps: Sequence[float] | None = None
    max_files: int | None = 16
    max_seconds: float | None = 4.0
    speech: bool = True
    quiet: bool = False
    init: str | None = None
    export_seconds: float = 0.0
    train_only: bool = False


@dataclass
class RunSpec:
    name: str
    variant: str
    seed: int
    sweep: dict[str, str]
    overrides: list[str]


@dataclass
class AblationResult:
    runs: list[RunSpec]
    rows: list[dict[str, Any]]
    trained: int
    out: Path
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)


def plan_runs(opts: AblationOptions) -> list[RunSpec]:
    """Every (sweep combination x variant x seed) with the overrides that define it (later ones win)."""
    unknown = [v for v in opts.variants if v not in VARIANTS]
    if unknown or not opts.variants:
        raise AblationError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if not opts.seeds:
        raise AblationError("give at least one seed")
    axes: list[tuple[str, list[str]]] = []
    for item in opts.sweeps:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise AblationError(f"--sweep expects KEY=V1,V2,..., got {item!r}")
        axes.append((key.strip(), vals))
    runs = []
    for combo in itertools.product(*[vals for _, vals in axes]):
        sweep = {k: v for (k, _), v in zip(axes, combo, strict=True)}
        tag = "".join(f"__{k.split('.')[-1]}={v}" for k, v in sweep.items())
        for variant in opts.variants:
            q = VARIANTS[variant]
            for seed in opts.seeds:
                ov = [
                    *opts.overrides,
                    *(f"{k}={v}" for k, v in sweep.items()),
                    f"model.quantizer.estimator={q['estimator']}",
                    f"model.quantizer.wiring={q['wiring']}",
                    f"train.seed={int(seed)}",
                ]
                runs.append(RunSpec(f"{variant}{tag}__seed{int(seed)}", variant, int(seed), sweep, ov))
    return runs


def _exported(run_dir: Path) -> tuple[int, Path] | None:
    """The newest model exported for evaluation (`RUN/eval/export/step_N`, with `--export-seconds` or by a
    machine that trained the run elsewhere and brought back only that file) as (N, path), or None."""
    found = []
    for meta in run_dir.glob("eval/export/step_*.json"):
        digits = meta.stem.removeprefix("step_")
        if digits.isdigit() and meta.with_suffix(".safetensors").is_file():
            found.append((int(digits), meta.with_suffix("")))
    return max(found) if found else None


def _finished_step(run_dir: Path) -> int:
    """The step of the run's latest checkpoint (or, without one, of its exported model), -1 when it has
    neither. A damaged checkpoint is a `CheckpointError` that says how to get back to an intact one:
    retraining over it would lose the run."""
    from rotcodec.train.checkpoint import checkpoint_step, latest_checkpoint, require_intact

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        exported = _exported(run_dir)
        return -1 if exported is None else exported[0]
    require_intact(ckpt)
    return checkpoint_step(ckpt)


def _eval_items(recipe: Any, opts: AblationOptions) -> list[tuple[str, np.ndarray]] | None:
    """The recipe's validation files as in-memory [channels, time] clips (None when eval_data is given)."""
    if opts.eval_data is not None:
        return None
    from rotcodec.audio import load_audio, resample, to_channels
    from rotcodec.data.dataset import build_datasets

    _, valid = build_datasets(recipe.data)
    items = []
    for i, entry in enumerate(valid.entries[: opts.max_files or None]):
        if valid.cache is not None:
            wav = valid.cache[i]
        else:
            wav, sr = load_audio(entry.path)
            wav = resample(to_channels(wav, recipe.data.channels), sr, recipe.data.sample_rate)
        items.append((entry.path, np.asarray(wav, dtype=np.float32)))
    return items


@torch.no_grad()
def stage_stats(codec: Any, items: Sequence[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Per-stage codebook usage (fraction of codes used), perplexity and relative quantization error of a
    model over all frames of `items` ([channels, time] at the model rate), all n_q stages active."""
    n_q, k = codec.n_q, codec.codebook_size
    hist = np.zeros((n_q, k))
    err = np.zeros(n_q)
    total, frames = 0.0, 0
    codec.eval()
    for _, wav in items:
        out = codec(torch.from_numpy(np.ascontiguousarray(wav))[None])
        codes = out.codes.reshape(-1, n_q, out.codes.shape[-1])
        n = codes.shape[0] * codes.shape[-1]
        for s in range(n_q):
            hist[s] += np.bincount(codes[:, s].reshape(-1).numpy(), minlength=k)
            err[s] += float(out.stats[f"vq{s}/quant_error"]) * n
        total += float(out.stats["vq/quant_error_total"]) * n
        frames += n
    p = hist / np.maximum(hist.sum(1, keepdims=True), 1)
    ent = -(p * np.log(np.where(p > 0, p, 1))).sum(1)
    return {
        "usage": (hist > 0).mean(1).tolist(),
        "perplexity": np.exp(ent).tolist(),
        "quant_error": (err / max(frames, 1)).tolist(),
        "usage_mean": float((hist > 0).mean()),
        "perplexity_mean": float(np.exp(ent).mean()),
        "quant_error_mean": float((err / max(frames, 1)).mean()),
        "quant_error_total": total / max(frames, 1),
    }


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """RUN/metrics.jsonl records ([] if absent)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _train_run(spec: RunSpec, opts: AblationOptions, run_dir: Path) -> tuple[Any, bool]:
    from rotcodec.train.loop import train
    from rotcodec.train.recipe import load_recipe

    try:
        recipe = load_recipe(opts.recipe, spec.overrides)
    except (ValueError, OSError, TypeError) as exc:
        raise AblationError(f"{spec.name}: recipe does not load ({exc})") from None
    step = _finished_step(run_dir)
    if step >= recipe.train.steps:
        return recipe, False
    # A run folder without a checkpoint still resumes: `train` then says why it starts over, or refuses.
    resume = step >= 0 or (run_dir / "config.json").is_file()
    train(recipe, run_dir, resume=resume, init=opts.init, quiet=opts.quiet)
    return recipe, True


def _model_to_evaluate(recipe: Any, opts: AblationOptions, run_dir: Path) -> Path:
    """The run's latest checkpoint, or (export_seconds > 0) the model file `rotcodec export` makes of it; a
    run without checkpoints is evaluated on its exported model, given its code tables first if it has none."""
    from rotcodec.train.checkpoint import latest_checkpoint, require_intact
    from rotcodec.train.export import export

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        exported = _exported(run_dir)
        if exported is None:
            raise AblationError(f"{run_dir} has no checkpoint or exported model to evaluate")
        source = out = exported[1]
        done = not recipe.data.sources or json.loads(out.with_suffix(".json").read_text()).get("has_code_counts")
    else:
        require_intact(ckpt)
        if opts.export_seconds <= 0:
            return ckpt / "model"
        source, out = ckpt, run_dir / "eval" / "export" / ckpt.name
        done = out.with_suffix(".json").is_file()
    if opts.export_seconds > 0 and not done:
        export(source, out, list(recipe.data.sources), opts.export_seconds, {"recipe": recipe.name})
    return out


def _evaluate_run(spec: RunSpec, recipe: Any, opts: AblationOptions, run_dir: Path) -> tuple[list, dict]:
    from rotcodec.eval.codecs import NeuralCodec
    from rotcodec.eval.runner import EvalOptions, run_eval

    model = _model_to_evaluate(recipe, opts, run_dir)
    items = _eval_items(recipe, opts)
    eval_opts = EvalOptions(
        model=model,
        data=opts.eval_data,
        out=run_dir / "eval",
        kbps=opts.kbps or (),
        n_q=None if opts.kbps else list(range(1, recipe.model.quantizer.n_q + 1)),
        max_files=opts.max_files,
        max_seconds=opts.max_seconds,
        speech=opts.speech,
        name=spec.variant,
        quiet=True,
        items=items,
    )
    outcome = run_eval(eval_opts)
    stats_path = run_dir / "eval" / "stats.json"
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text())
    else:
        if items is None:
            from rotcodec.eval.runner import find_eval_files, load_reference

            codec = NeuralCodec(model).codec
            files = find_eval_files(opts.eval_data, opts.max_files)
            items = [(f, load_reference(f, codec.sample_rate, codec.channels, opts.max_seconds)) for f in files]
        else:
            codec = NeuralCodec(model).codec
            cut = int(round(opts.max_seconds * codec.sample_rate)) if opts.max_seconds else None
            items = [(n, w[:, :cut]) for n, w in items]
        stats = stage_stats(codec, items)
        losses = [r["loss/total"] for r in read_metrics(run_dir) if "loss/total" in r]
        stats["final_loss"] = float(np.mean(losses[-3:])) if losses else float("nan")
        atomic_write_text(stats_path, json.dumps(stats, indent=2) + "\n")
    return outcome.rows, stats


def run_ablation(opts: AblationOptions) -> AblationResult:
    """Train (or reuse) every planned run, evaluate it, and write the ablation report into `opts.out`."""
    out = Path(opts.out)
    runs = plan_runs(opts)
    trained, table, all_stats, curves, per_file = 0, [], {}, {}, {}
    for i, spec in enumerate(runs):
        run_dir = out / "runs" / spec.name
        if not opts.quiet:
            print(f"[{i + 1}/{len(runs)}] {spec.name}", flush=True)
        recipe, did_train = _train_run(spec, opts, run_dir)
        trained += int(did_train)
        if opts.train_only:
            continue
        rows, stats = _evaluate_run(spec, recipe, opts, run_dir)
        all_stats[spec.name] = stats
        per_file[spec.name] = rows
        curves[spec.name] = read_metrics(run_dir)
        by_setting: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_setting.setdefault(r["setting"], []).append(r)
        for setting, group in by_setting.items():
            row: dict[str, Any] = {
                "run": spec.name,
                "variant": spec.variant,
                "seed": spec.seed,
                **spec.sweep,
                "setting": setting,
                "n_q": group[0]["n_q"],
                "nominal_kbps": as_float(group[0]["nominal_kbps"]),
                "files": len(group),
            }
            for m in AUDIO_METRICS:
                row[m] = nanmean([as_float(r.get(m)) for r in group])
            row.update({k: stats[k] for k in STAT_KEYS})
            row.update({f"vq{s}/usage": u for s, u in enumerate(stats["usage"])})
            row.update({f"vq{s}/perplexity": p for s, p in enumerate(stats["perplexity"])})
            table.append(row)
    if opts.train_only:
        return AblationResult(runs, table, trained, out)
    write_csv(table, out / "ablation.csv")
    atomic_write_text(out / "ablation.md", ablation_markdown(table, runs, all_stats, per_file))
    groups: dict[str, list[RunSpec]] = {}
    for spec in runs:
        groups.setdefault(group_name(spec), []).append(spec)
    plot_training_curves({g: [curves[s.name] for s in specs] for g, specs in groups.items()}, out / "curves.png")
    stage_groups = {g: [all_stats[s.name] for s in specs] for g, specs in groups.items()}
    plot_stage_stats(stage_groups, out / "per_stage_usage.png")
    return AblationResult(runs, table, trained, out, all_stats)
