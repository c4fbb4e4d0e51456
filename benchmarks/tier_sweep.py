"""Which envelope tier buys the most quality at a rate? Each tier's best layout under `--kbps`, per file.

    python benchmarks/tier_sweep.py --data test_manifest.tsv --split test --kbps 12 --tiers 8 9 10 --base 8
    python benchmarks/tier_sweep.py --data DIR --kbps 8 --tiers 7 9 --csv sweep.csv
    python benchmarks/tier_sweep.py --music --model music24k --data music_manifest.tsv --split valid \
        --max-seconds 20 --kbps 12 --tiers 3 6 7

For every file (mono, at the model's rate) and tier, the model's planner picks the layout of that tier only
(`CodecModel.plan(..., tier=T)`: the most stages that fit beside the tier's rows, priced on the file itself,
at least the tier's `min_stages`; over the request when even that does not fit, which the table's kbps
column shows); the stream is decoded and scored with PESQ-WB, STOI and mel distance (`--music`: mel distance and
multi-resolution STFT distance). Prints per tier the mean stages, measured kbps and scores, and the
difference of the first score (PESQ-WB, or mel distance) to `--base` paired per file (mean, 95% t interval,
files better). This is how the planner's tier priorities (`EnvelopeConfig.priority`) were
chosen; it does not replan, so a file's rate may differ from `compress --kbps` by the replanning step.
"""

from __future__ import annotations

import argparse
import csv
import statistics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="manifest or folder of audio")
    p.add_argument("--split", default=None, help="manifest split to use (default: all rows)")
    p.add_argument("--kbps", type=float, required=True)
    p.add_argument("--tiers", type=int, nargs="+", required=True, help="envelope tiers to compare")
    p.add_argument("--base", type=int, help="tier the others are paired against (default: the first)")
    p.add_argument("--model", default="speech16k", help="model name or path")
    p.add_argument("--music", action="store_true", help="score mel distance and MR-STFT instead of PESQ-WB, STOI")
    p.add_argument("--max-seconds", type=float, help="score only each file's first that many seconds")
    p.add_argument("--csv", help="also write the per-file rows here")
    args = p.parse_args(argv)

    import torch
    from rate_accuracy import files_by_speaker, load_joined

    from rotcodec.eval.metrics import HIGHER_IS_BETTER, mel_distance, mrstft_distance, pesq_wb, stoi
    from rotcodec.eval.report import mean_ci
    from rotcodec.inference import load_model

    torch.set_num_threads(1)
    model = load_model(args.model)
    sr = model.sample_rate
    paths = [path for group in files_by_speaker(args.data, args.split).values() for path in group]
    bad = [t for t in args.tiers if not 0 <= t < len(model.codec.envelopes)]
    if bad or not paths:
        p.error(f"no such tier(s) {bad} in {model.name}" if bad else f"no audio in {args.data}")
    if args.music:
        scores = {"mel_distance": mel_distance, "mrstft": mrstft_distance}
    else:
        scores = {"pesq_wb": pesq_wb, "stoi": stoi, "mel_distance": mel_distance}
    key = next(iter(scores))
    rows: list[dict] = []
    for path in paths:
        x = load_joined([path], sr)[0]
        if args.max_seconds:
            x = x[: int(args.max_seconds * sr)]
        seconds = len(x) / sr
        costs = model.row_costs(x[None], sr)
        for tier in args.tiers:
            lay = model.plan(kbps=args.kbps, costs=costs, seconds=seconds, tier=tier)
            data = model.compress(x, sr, layout=lay)
            y = model.decompress(data)[0][0]
            rows.append(
                {
                    "file": path,
                    "tier": tier,
                    "n_q": lay.n_q,
                    "kbps": len(data) * 8 / seconds / 1000,
                    **{name: score(x, y, sr) for name, score in scores.items()},
                }
            )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    base = args.tiers[0] if args.base is None else args.base
    ref = {r["file"]: r[key] for r in rows if r["tier"] == base}
    print(f"model {model.name}, {len(paths)} files, --kbps {args.kbps:g}, {key} paired against tier {base}")
    print(f"{'tier':>4} {'stages':>6} {'kbps':>6} " + " ".join(f"{name:>12}" for name in scores) + f"  {key} - base")
    for tier in args.tiers:
        mine = [r for r in rows if r["tier"] == tier]

        def mean(name: str, mine: list[dict] = mine) -> float:
            return statistics.fmean(r[name] for r in mine)

        diffs = [r[key] - ref[r["file"]] for r in mine if r["file"] in ref]
        paired = ""
        if tier != base and len(diffs) > 1:
            mid, half, n = mean_ci(diffs)
            better = sum((d > 0) == HIGHER_IS_BETTER[key] and d != 0 for d in diffs)
            paired = f"{mid:+.4f} ± {half:.4f} ({better}/{n})"
        values = " ".join(f"{mean(name):>12.4f}" for name in scores)
        print(f"{tier:>4} {mean('n_q'):>6.1f} {mean('kbps'):>6.2f} {values}  {paired}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
