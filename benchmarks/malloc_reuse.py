"""What `rotcodec.runtime.keep_freed_memory` (malloc reusing freed memory) buys: encode, decode and training
speed with and without it, measured side by side in one run.

    python benchmarks/malloc_reuse.py [--model speech16k] [--kbps 6] [--seconds 10] [--threads 1]
                                      [--recipe recipes/speech16k_refine.yaml] [--train-steps 12] [--rounds 2]

The setting is process-wide and cannot be undone, so each measurement runs in its own child process; the
two variants alternate, `--rounds` times, and the table shows each one's best. Encode and decode code a
file (`codec_speed.generate`'s speech-like signal) through the Python API (`CodecModel.compress` / `decompress`);
training is `train_speed.measure`: the recipe's real loop on synthetic data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> dict[str, float]:
    """One measurement in this process: real-time factors of encode and decode, training audio-seconds/s."""
    import soundfile as sf
    import torch

    from rotcodec.runtime import keep_freed_memory

    if args.keep:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    from codec_speed import generate  # this folder's benchmarks: the same test signal and training set-up
    from train_speed import measure

    from rotcodec.inference import load_model

    model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "in.wav", args.seconds, model.sample_rate)
        x, sr = sf.read(Path(tmp) / "in.wav", dtype="float32")
    model.compress(x[:sr], sr, kbps=args.kbps)  # warm-up
    start = time.perf_counter()
    data = model.compress(x, sr, kbps=args.kbps)
    encode = args.seconds / (time.perf_counter() - start)
    start = time.perf_counter()
    model.decompress(data)
    decode = args.seconds / (time.perf_counter() - start)
    out = {"encode": encode, "decode": decode}
    if args.train_steps:
        out["train"] = measure(args.recipe, args.train_steps, [f"train.threads={args.threads}"])[2]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="speech16k")
    p.add_argument("--kbps", type=float, default=6.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recipe", default="recipes/speech16k_refine.yaml")
    p.add_argument("--train-steps", type=int, default=12, help="0: skip the training measurement")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--keep", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    best: dict[int, dict[str, float]] = {0: {}, 1: {}}
    for _ in range(args.rounds):
        for keep in (0, 1):
            cmd = [sys.executable, __file__, "--child", f"--keep={keep}", *sys.argv[1:]]
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for key, value in result.items():
                best[keep][key] = max(best[keep].get(key, 0.0), value)
    print(f"model={args.model} --kbps {args.kbps:g}, {args.seconds:g} s, threads={args.threads}; best of {args.rounds}")
    print("| measure | malloc default | keep_freed_memory | ratio |\n|---|---|---|---|")
    names = {"encode": "encode x real time", "decode": "decode x real time", "train": "training audio-s/s"}
    for key, name in names.items():
        if key in best[0]:
            print(f"| {name} | {best[0][key]:.2f} | {best[1][key]:.2f} | {best[1][key] / best[0][key]:.2f} |")


if __name__ == "__main__":
    main()
