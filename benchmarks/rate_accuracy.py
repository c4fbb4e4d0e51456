"""Does `--kbps` mean what it says? Measured rate of whole `.rcq` files against the request.

    python benchmarks/rate_accuracy.py --data test_manifest.tsv --split test --kbps 1.5 3 6 12
    python benchmarks/rate_accuracy.py --data DIR --model music24k --no-join [--max-seconds 20]

Joins each speaker's files of the split into one long file (the rate promise is for files of 10 s or more;
`--no-join`: every file on its own), compresses it at each `--kbps` with the model's own planner, and prints
a table of the file's measured rate (file size over duration, header and chunk records included), its ratio
to the request and the layout sent, then how many files land within 5% under the request and how many
exceed it. No decoding: only sizes are measured.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np


def files_by_speaker(data: str, split: str | None) -> dict[str, list[str]]:
    """{speaker: paths} from a manifest (rows of `split`) or a folder (one "speaker" per parent folder)."""
    from rotcodec.data.manifest import find_audio, read_manifest

    try:
        entries = [e for e in read_manifest(data) if split is None or e.split == split]
    except Exception:  # not a manifest: a folder or glob
        entries = find_audio([data])
    groups: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        groups[e.speaker or "?"].append(str(e.path))
    return dict(sorted(groups.items()))


def load_joined(paths: list[str], sr: int) -> np.ndarray:
    """The files, mono-mixed and resampled to `sr` Hz, joined end to end: float32 `[1, time]`."""
    from rotcodec.audio import load_audio, resample

    parts = []
    for p in sorted(paths):
        x, rate = load_audio(p)
        parts.append(resample(x.mean(axis=0), rate, sr))
    return np.concatenate(parts).astype(np.float32)[None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="manifest or folder of audio")
    p.add_argument("--split", default=None, help="manifest split to use (default: all rows)")
    p.add_argument("--kbps", type=float, nargs="+", default=[1.5, 3.0, 6.0, 12.0])
    p.add_argument("--model", default="speech16k", help="model name or path")
    p.add_argument("--no-join", action="store_true", help="each file on its own instead of one per speaker")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-seconds", type=float, help="cut each (joined) file to its first seconds, as eval does")
    args = p.parse_args(argv)

    import torch

    from rotcodec.inference import load_model, read_rcq_header

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    groups = files_by_speaker(args.data, args.split)
    if args.no_join:
        groups = {f: [f] for paths in groups.values() for f in paths}
    print(f"model {model.name}, {len(groups)} {'files' if args.no_join else 'speakers (files joined)'}")
    print(f"{'file':<28} {'s':>6} {'kbps':>6} {'measured':>9} {'ratio':>6}  layout")
    within = over = total = 0
    for name, paths in groups.items():
        wav = load_joined(paths, model.sample_rate)
        if args.max_seconds:
            wav = wav[:, : int(args.max_seconds * model.sample_rate)]
        seconds = wav.shape[1] / model.sample_rate
        for kbps in args.kbps:
            data = model.compress(wav, model.sample_rate, kbps=kbps)
            measured = len(data) * 8 / seconds / 1000
            layout = model.layout_of(read_rcq_header(data))
            ratio = measured / kbps
            if seconds >= 10:
                total += 1
                within += 0.95 <= ratio <= 1.0
                over += ratio > 1.0
            label = name if len(name) <= 28 else "..." + name[-25:]
            print(f"{label:<28} {seconds:6.1f} {kbps:6g} {measured:9.3f} {ratio:6.3f}  {model.describe(layout)}")
    print(f"files of 10 s or more: {within} of {total} within 5% under the request, {over} over it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
