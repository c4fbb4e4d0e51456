"""Where a training step's time goes, op by op, for each quantizer estimator side by side, on any device.

    python benchmarks/step_profile.py recipes/speech16k_refine.yaml [--steps 10] [--warmup 5] [--rows 15]
        [--estimators rotation ste] [--set train.batch_size=128 ...] [--shapes]

Builds the recipe's codec, losses and optimiser as `rotcodec train` does (random weights, random audio, so no
data loading counts), runs warm-up steps of the real training step, then times `--steps` steps per estimator,
interleaved, and profiles a few more with torch.profiler. Prints per estimator: ms per step, operators
dispatched and device kernels launched per step, and the ops with the most self time on the device (CUDA) or
the CPU. A step whose wall time is well above its device time is bound by dispatching operators, not by
arithmetic (docs/results/gpu_lease_h200_2).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from rotcodec.models.codec import Codec
from rotcodec.train.loop import _train_step, amp_enabled
from rotcodec.train.recipe import load_recipe
from rotcodec.train.setup import build_models, setup_process


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(recipe_path: str, estimator: str, overrides: list[str]):  # noqa: ANN201
    recipe = load_recipe(recipe_path, [*overrides, f"model.quantizer.estimator={estimator}"])
    info, device = setup_process(recipe.train)
    models = build_models(Codec(recipe.model), recipe, device, info, None, 0)
    length = int(recipe.data.segment_seconds * recipe.model.sample_rate)
    wav = 0.1 * torch.randn(recipe.train.batch_size, recipe.model.channels, length, device=device)
    amp = amp_enabled(recipe.train, device)
    return recipe, models, wav, device, amp


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--estimators", nargs="+", default=["rotation", "ste"], choices=["rotation", "ste"])
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--shapes", action="store_true", help="one row per op and input shapes")
    args = p.parse_args()
    runs = {e: build(args.recipe, e, args.overrides) for e in args.estimators}
    step = {e: 0 for e in runs}

    def one(e: str) -> None:
        recipe, models, wav, _, amp = runs[e]
        _train_step(models, wav, step[e], recipe, amp)
        step[e] += 1

    for e in runs:  # k-means init, cuDNN autotuning, allocator warm-up
        for _ in range(args.warmup):
            one(e)
    times = {e: 0.0 for e in runs}
    for _ in range(args.steps):  # interleaved, so drift on a shared machine hits both alike
        for e in runs:
            device = runs[e][3]
            _sync(device)
            t0 = time.perf_counter()
            one(e)
            _sync(device)
            times[e] += time.perf_counter() - t0
    recipe, _, wav, device, amp = next(iter(runs.values()))
    print(
        f"recipe={args.recipe} device={device} threads={torch.get_num_threads()} "
        f"batch={wav.shape[0]}x{wav.shape[-1] / recipe.model.sample_rate:g}s amp={amp}"
    )
    base = None
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for e in runs:
        profiled = 3
        with profile(activities=activities, record_shapes=args.shapes) as prof:
            for _ in range(profiled):
                one(e)
            _sync(device)
        events = prof.key_averages(group_by_input_shape=args.shapes)
        ops = sum(ev.count for ev in events if ev.key.startswith("aten::")) / profiled
        kernels = sum(ev.count for ev in events if getattr(ev, "device_type", None) == torch.autograd.DeviceType.CUDA)
        ms = 1000 * times[e] / args.steps
        base = base or ms
        print(
            f"\n## estimator={e}: {ms:.1f} ms/step ({ms / base:.2f}x the first), {ops:.0f} aten ops/step, "
            f"{kernels / profiled:.0f} device kernels/step"
        )
        width = dict(max_shapes_column_width=90) if args.shapes else {}
        print(events.table(sort_by=sort, row_limit=args.rows, max_name_column_width=48, **width))


if __name__ == "__main__":
    main()
