"""Forward+backward time of ResidualVQ with the rotation trick vs the straight-through estimator.

Both estimators run in the same process, interleaved round by round, so machine noise hits both alike.
Prints a table (median ms per training step of the quantizer) and the rotation/STE ratio.

    python benchmarks/quantizer.py [--dim 128 --n-q 8 --codebook-size 1024 --batch 16 --frames 150]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rotcodec.quantize import ResidualVQ


def step(rvq: ResidualVQ, x: torch.Tensor, g: torch.Tensor) -> None:
    x.grad = None
    out = rvq(x)
    (out.quantized * g).sum().add(out.loss).backward()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--n-q", type=int, default=8)
    p.add_argument("--codebook-size", type=int, default=1024)
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
        rvq = ResidualVQ(args.dim, args.n_q, args.codebook_size, estimator=est).to(args.device).train()
        step(rvq, x, g)  # k-means init, warm-up
        step(rvq, x, g)
        variants[est] = rvq
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
        f"ResidualVQ dim={args.dim} n_q={args.n_q} K={args.codebook_size} batch={args.batch}x{args.frames} "
        f"device={args.device} threads={args.threads} rounds={args.rounds}"
    )
    print("| estimator | median ms/step | min ms/step |\n|---|---|---|")
    for k in med:
        print(f"| {k} | {med[k]:.2f} | {min(times[k]) * 1e3:.2f} |")
    print(f"rotation / STE time ratio (median): {med['rotation'] / med['ste']:.3f}")


if __name__ == "__main__":
    main()
