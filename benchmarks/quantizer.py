"""Forward+backward time of ResidualVQ with the rotation trick vs the straight-through estimator.

Both estimators run in the same process, interleaved round by round, so machine noise hits both alike.
Prints a table (median ms per training step of the quantizer, and the number of tensor ops one step
dispatches) and the rotation/STE ratio. The op count does not depend on the machine: where each op costs a
fixed launch and dispatch overhead (small rows on a GPU), it predicts the time ratio better than a CPU timing.

    python benchmarks/quantizer.py [--dim 128 --n-q 8 --codebook-size 1024 --codebook-dim 8 --batch 16 --frames 150]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rotcodec.quantize import ResidualVQ


def step(rvq: ResidualVQ, x: torch.Tensor, g: torch.Tensor) -> None:
    x.grad = None
    out = rvq(x)
    (out.quantized * g).sum().add(out.loss).backward()


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops dispatched while active (views and in-place ops included)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--n-q", type=int, default=8)
    p.add_argument("--codebook-size", type=int, default=1024)
    p.add_argument("--codebook-dim", type=int, default=None, help="factorised codes (speech16k: 8)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.dim, args.frames, device=args.device, requires_grad=True)
    g = torch.randn_like(x)
    variants = {}
    for est in ("rotation", "ste"):
        torch.manual_seed(0)
        rvq = ResidualVQ(args.dim, args.n_q, args.codebook_size, estimator=est, codebook_dim=args.codebook_dim)
        rvq = rvq.to(args.device).train()
        step(rvq, x, g)  # k-means init, warm-up
        step(rvq, x, g)
        variants[est] = rvq
    n_ops = {}
    for name, rvq in variants.items():
        with OpCounter() as counter:
            step(rvq, x, g)
        n_ops[name] = sum(counter.ops.values())
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, rvq in variants.items():
            sync(args.device)
            t0 = time.perf_counter()
            step(rvq, x, g)
            sync(args.device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(
        f"ResidualVQ dim={args.dim} n_q={args.n_q} K={args.codebook_size} codebook_dim={args.codebook_dim} "
        f"batch={args.batch}x{args.frames} device={args.device} threads={args.threads} rounds={args.rounds}"
    )
    print("| estimator | median ms/step | min ms/step | ops/step |\n|---|---|---|---|")
    for k in med:
        print(f"| {k} | {med[k]:.2f} | {min(times[k]) * 1e3:.2f} | {n_ops[k]} |")
    print(f"rotation / STE time ratio (median): {med['rotation'] / med['ste']:.3f}")
    print(f"rotation / STE op ratio: {n_ops['rotation'] / n_ops['ste']:.3f} ({n_ops['rotation'] - n_ops['ste']} more)")


if __name__ == "__main__":
    main()
