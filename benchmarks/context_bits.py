"""What do context rows save? Stream sizes of every envelope tier with and without the model's context tables.

    python benchmarks/context_bits.py --model music24k --data music_manifest.tsv --split valid --max-seconds 20
    python benchmarks/context_bits.py --model speech16k --data shared_manifest.tsv --split valid --tiers 0 7 9

For every file (mono, at the model's rate) and tier, the file is coded with that tier's band gains and
`--stages` stages twice: as the model codes it (context rows, format version 6) and with its context tables
left out (each row coded with its own table, as before). Prints per tier the mean measured kbps of both, the
saving paired per file (mean, 95% t interval), and the decode time with context rows over that without (both
decodes of every file timed one after the other, 1 thread; the sum over files). The codes are the same, so
the difference is all in how the side rows are coded.
"""

from __future__ import annotations

import argparse
import statistics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="manifest or folder of audio")
    p.add_argument("--split", default=None, help="manifest split to use (default: all rows)")
    p.add_argument("--model", default="speech16k", help="model name or path")
    p.add_argument("--tiers", type=int, nargs="+", help="envelope tiers (default: all)")
    p.add_argument("--stages", type=int, default=2, help="RVQ stages beside the band gains")
    p.add_argument("--max-seconds", type=float, help="code only each file's first that many seconds")
    args = p.parse_args(argv)

    import copy
    import time

    import torch
    from rate_accuracy import files_by_speaker, load_joined

    from rotcodec.eval.report import mean_ci
    from rotcodec.inference import load_model

    torch.set_num_threads(1)
    model = load_model(args.model)
    if model.context_counts is None:
        p.error(f"{model.name} has no context tables (export it again with --data)")
    static = copy.copy(model)
    static.context_counts = None
    sr = model.sample_rate
    tiers = args.tiers if args.tiers is not None else list(range(len(model.codec.envelopes)))
    paths = [path for group in files_by_speaker(args.data, args.split).values() for path in group]
    if not paths:
        p.error(f"no audio in {args.data}")
    sizes: dict[int, list[tuple[float, float]]] = {t: [] for t in tiers}
    decode_s: dict[int, list[float]] = {t: [0.0, 0.0] for t in tiers}
    for path in paths:
        x = load_joined([path], sr)[0]
        if args.max_seconds:
            x = x[: int(args.max_seconds * sr)]
        seconds = len(x) / sr
        for tier in tiers:
            lay = model.codec.layout(max(args.stages, model.codec.envelopes[tier].cfg.min_stages), tier)
            streams = [m.compress(x, sr, layout=lay) for m in (model, static)]
            sizes[tier].append(tuple(len(d) * 8 / seconds / 1000 for d in streams))
            for i, (m, d) in enumerate(zip((model, static), streams, strict=True)):
                start = time.perf_counter()
                m.decompress(d)
                decode_s[tier][i] += time.perf_counter() - start
    print(f"model {model.name}, {len(paths)} files, {args.stages} stages (or the tier's least)")
    head = f"{'tier':>4} {'rows':>5} {'kbps with':>10} {'without':>8}  {'saving (kbps, paired)':<26}"
    print(head + " decode time with/without")
    for tier in tiers:
        pairs = sizes[tier]
        mid, half, n = mean_ci([b - a for a, b in pairs])
        rows = model.codec.envelopes[tier].cfg.envelope_rows
        with_, without = (statistics.fmean(v[i] for v in pairs) for i in (0, 1))
        saving = f"{mid:.2f} ± {half:.2f} ({n} files)"
        ratio = decode_s[tier][0] / decode_s[tier][1]
        print(f"{tier:>4} {rows:>5} {with_:>10.2f} {without:>8.2f}  {saving:<26} {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
