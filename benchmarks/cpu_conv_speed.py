"""Training convolutions on the CPU: torch's kernels against `rotcodec.models.cpu_conv`, layer by layer.

    python benchmarks/cpu_conv_speed.py recipes/speech16k_refine.yaml [--threads 2] [--repeats 15]

Records the shapes of every stride-1 convolution in one training forward of the recipe's codec (batch and
segment as the recipe trains), then times each one's forward, input gradient and weight and bias gradients with
torch's kernels (oneDNN on x86; the bias gradient alone in brackets) and with `StrideOneConv`'s, and prints a
table: milliseconds per call (median of `--repeats`), and per training step (calls x median) at the bottom.
The whole step's gain is measured by `train_speed.py`, alternating checkouts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F

from rotcodec.models import cpu_conv
from rotcodec.models.codec import Codec
from rotcodec.train.recipe import load_recipe


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def stride_one_shapes(recipe_path: str) -> Counter:
    """(input shape, weight shape, dilation) -> calls, for one training forward of the recipe's codec."""
    recipe = load_recipe(recipe_path, ["model.quantizer.kmeans_init=false"])
    codec = Codec(recipe.model).train()
    length = int(recipe.data.segment_seconds * recipe.model.sample_rate)
    wav = 0.1 * torch.randn(recipe.train.batch_size, recipe.model.channels, length)
    seen: Counter = Counter()
    real = cpu_conv.StrideOneConv.apply

    def record(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, dilation: int) -> torch.Tensor:
        seen[(tuple(x.shape), tuple(w.shape), dilation)] += 1
        return real(x, w, b, dilation)

    cpu_conv.StrideOneConv.apply = record
    try:
        codec(wav)
    finally:
        cpu_conv.StrideOneConv.apply = real
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    shapes = stride_one_shapes(args.recipe)
    print(f"recipe={args.recipe} threads={args.threads}: stride-1 convolutions of one training step (ms)")
    print(
        "| input | weight | dilation | calls | torch: fwd / input grad / weight+bias grad (bias alone) "
        "| cpu_conv: fwd / input grad / weight+bias grad |"
    )
    print("|---|---|---|---|---|---|")
    totals = [0.0] * 7
    for (xs, ws, d), calls in sorted(shapes.items(), key=lambda kv: -kv[0][0][-1]):
        x, w = torch.randn(xs), torch.randn(ws)
        g = torch.randn(xs[0], ws[0], xs[-1] - (ws[-1] - 1) * d)

        def torch_grad(mask: list[bool], x=x, w=w, g=g, d=d, c=ws[0]) -> object:  # noqa: ANN001
            # as autograd calls it for a conv with a bias
            return torch.ops.aten.convolution_backward(g, x, w, [c], [1], [0], [d], False, [0], 1, mask)

        def ours_weight(x=x, w=w, g=g, d=d) -> object:  # noqa: ANN001
            return cpu_conv.stride_one_weight_grad(g, x, w.shape[-1], d), g.sum((0, 2))

        row = [
            median_ms(lambda x=x, w=w, d=d: F.conv1d(x, w, dilation=d), args.repeats),
            median_ms(lambda f=torch_grad: f([True, False, False]), args.repeats),
            median_ms(lambda f=torch_grad: f([False, True, True]), args.repeats),
            median_ms(lambda f=torch_grad: f([False, False, True]), args.repeats),
            median_ms(lambda x=x, w=w, d=d: cpu_conv.StrideOneConv.forward(_Ctx(), x, w, None, d), args.repeats),
            median_ms(lambda x=x, w=w, g=g, d=d: cpu_conv.stride_one_input_grad(g, x, w, d), args.repeats),
            median_ms(ours_weight, args.repeats),
        ]
        totals = [t + calls * r for t, r in zip(totals, row, strict=True)]
        print(
            f"| {list(xs)} | {list(ws)} | {d} | {calls} | {' / '.join(f'{r:.2f}' for r in row[:3])} ({row[3]:.2f}) | "
            f"{' / '.join(f'{r:.2f}' for r in row[4:])} |"
        )
    print(
        f"| per step | | | {sum(shapes.values())} | {' / '.join(f'{t:.1f}' for t in totals[:3])} ({totals[3]:.1f}) | "
        f"{' / '.join(f'{t:.1f}' for t in totals[4:])} |"
    )
    print("(the first conv's input gradient is never computed in training: its input is the audio)")


class _Ctx:
    """Stands in for autograd's context to time `StrideOneConv.forward` alone."""

    def save_for_backward(self, *tensors: torch.Tensor) -> None:
        pass


if __name__ == "__main__":
    main()
