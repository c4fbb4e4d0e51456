"""Training throughput of a recipe: steps/s and audio-seconds/s of the full generator (+discriminator) step.

    python benchmarks/train_speed.py recipes/speech16k.yaml [--steps 20] [--set train.batch_size=8]
    python benchmarks/train_speed.py recipes/speech16k_refine.yaml --estimators rotation ste --repeats 3

Runs the real training loop (synthetic data, so disk and decoding do not count) in a temporary folder and
prints a table with the parameter count and the measured rates after warm-up. With real data
(`--set data.synthetic=false --set data.sources=[M.tsv] --set data.num_workers=N`) the data-wait column is the
share of the time the loop waited for batches: above a few percent the loader starves the step.
`--estimators rotation ste` trains the recipe once per quantizer estimator, alternated `--repeats` times, and
adds each one's whole-step time against the first's (the rotation trick's cost over straight-through).
The process runs with `rotcodec.runtime.keep_freed_memory`, as `rotcodec train` does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rotcodec.models.codec import Codec
from rotcodec.train.loop import amp_enabled, train
from rotcodec.train.recipe import Recipe, load_recipe


def measure(recipe_path: str, steps: int, overrides: list[str] = ()) -> tuple[Recipe, float, float, float, float]:
    """Train `steps` steps of the recipe on synthetic data in a temporary folder: (recipe, steps/s,
    audio-s/s after the first logging window, wall seconds including start-up, share of time waiting for
    data)."""
    recipe = load_recipe(
        recipe_path,
        [
            "data.synthetic=true",
            "data.num_workers=0",
            f"train.steps={steps}",
            f"train.log_every={max(1, steps // 4)}",
            "train.valid_every=1000000",
            "train.checkpoint_every=1000000",
            *overrides,
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(recipe, Path(tmp) / "run", quiet=True)
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in rows[1:] if "steps_per_s" in r] or rows  # first window includes k-means/warm-up
    sps = sum(r["steps_per_s"] for r in steady) / len(steady)
    aps = sum(r["audio_s_per_s"] for r in steady) / len(steady)
    wait = sum(r["data_wait_frac"] for r in steady) / len(steady)
    return recipe, sps, aps, wall, wait


def main() -> None:
    from rotcodec.runtime import keep_freed_memory

    keep_freed_memory()  # as `rotcodec train` does (x1.07 audio-s/s at 2 threads, docs/results/cpu_training_speed)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--estimators", nargs="+", help="train once per estimator (e.g. rotation ste), alternated")
    p.add_argument("--repeats", type=int, default=1, help="rounds of the estimators (median reported)")
    args = p.parse_args()
    runs: dict[str, list[tuple[Recipe, float, float, float, float]]] = {}
    for _ in range(args.repeats):
        for est in args.estimators or [None]:
            extra = [] if est is None else [f"model.quantizer.estimator={est}"]
            runs.setdefault(est or "", []).append(measure(args.recipe, args.steps, [*args.overrides, *extra]))
    recipe = next(iter(runs.values()))[0][0]
    params = Codec(recipe.model).num_parameters()
    device = torch.device("cuda" if torch.cuda.is_available() and recipe.train.device in ("auto", "cuda") else "cpu")
    print(
        f"recipe={args.recipe} device={device} threads={torch.get_num_threads()} "
        f"batch={recipe.train.batch_size}x{recipe.data.segment_seconds}s amp={amp_enabled(recipe.train, device)}"
    )
    first_name = next(iter(runs)) or recipe.model.quantizer.estimator
    print(f"| estimator | params | steps/s | audio-s/s | step time / {first_name}'s | data wait | wall s |")
    print("|---|---|---|---|---|---|---|")
    first = None
    for est, rs in runs.items():
        sps, aps, wall, wait = (statistics.median(r[i] for r in rs) for i in (1, 2, 3, 4))
        first = first or sps
        name = est or recipe.model.quantizer.estimator
        rates = f"{sps:.3f} | {aps:.2f} | {first / sps:.3f}"
        print(f"| {name} | {params / 1e6:.2f} M | {rates} | {wait:.1%} | {wall:.1f} |")


if __name__ == "__main__":
    main()
