"""Would joint (mid/side) stereo coding pay? Channel-by-channel coding (what `.rcq` does today) against mid/side
coding at the same total rate, on real stereo excerpts, with the shipped model: prints a table.

    python benchmarks/stereo_coding.py STEREO_FILES... [--model music24k] [--kbps 6 12] [--seconds 20]
        [--excerpts 3] [--mid-share 0.5 0.67]

Each file gives `--excerpts` stretches of `--seconds`, spread over it. For each total rate R:
- `L/R`: the stereo excerpt compressed as one 2-channel file at R (each channel coded alone, R/2 each);
- `M/S s`: mid (L+R)/2 and side (L−R)/2 compressed as two mono files at s·R and (1−s)·R, decoded, and
  L = M + S, R = M − S rebuilt; the two files' sizes are added.
Scores are mel distance and MR-STFT (`rotcodec.eval.metrics`) of the rebuilt L and R against the input,
averaged over both channels; the table gives each arm's mean, its measured total rate and its paired
difference from L/R (mean ± 95% t half-width over excerpts, excerpts better). No file format change is
needed to measure this: `.rcq` would need one to carry it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import soxr

from rotcodec.audio import load_audio
from rotcodec.eval.metrics import mel_distance, mrstft_distance
from rotcodec.eval.report import mean_ci
from rotcodec.inference import load_model


def excerpts(path: str, sr: int, seconds: float, count: int) -> list[np.ndarray]:
    """`count` stereo stretches `[2, seconds * sr]` spread over the file (its middle part), at `sr` Hz."""
    wav, file_sr = load_audio(path)
    if wav.shape[0] != 2:
        raise SystemExit(f"error: {path}: {wav.shape[0]} channels, need a stereo file")
    if file_sr != sr:
        wav = soxr.resample(np.ascontiguousarray(wav.T), file_sr, sr, quality="HQ").T
    n = int(seconds * sr)
    if wav.shape[1] < n:
        raise SystemExit(f"error: {path}: shorter than {seconds} s")
    starts = np.linspace(0.15, 0.85, count) * (wav.shape[1] - n)
    return [np.ascontiguousarray(wav[:, int(a) : int(a) + n], dtype=np.float32) for a in starts]


def code(model, x: np.ndarray, sr: int, kbps: float) -> tuple[np.ndarray, int]:  # noqa: ANN001
    """Compress and decompress `x` `[channels, t]`; returns the decode and the stream's size in bytes."""
    data = model.compress(x, sr, kbps=kbps)
    y, _ = model.decompress(data)
    return y[:, : x.shape[1]], len(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--model", default="music24k")
    p.add_argument("--kbps", type=float, nargs="+", default=[6.0, 12.0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--excerpts", type=int, default=3)
    p.add_argument("--mid-share", type=float, nargs="+", default=[0.5, 0.67])
    args = p.parse_args(argv)
    model = load_model(args.model)
    sr = model.sample_rate
    clips = [c for f in args.files for c in excerpts(f, sr, args.seconds, args.excerpts)]
    arms = ["L/R", *(f"M/S {s:g}" for s in args.mid_share)]
    print(f"model {args.model}, {len(clips)} stereo excerpts of {args.seconds:g} s from {len(args.files)} files")
    print("| total kbps | arm | kbps measured | mel distance | MR-STFT | mel − L/R | MR-STFT − L/R |")
    print("|---|---|---|---|---|---|---|")
    for total in args.kbps:
        scores: dict[str, list[tuple[float, float, float]]] = {a: [] for a in arms}
        for x in clips:
            y, size = code(model, x, sr, total)
            scores["L/R"].append((mel_distance(x, y, sr), mrstft_distance(x, y, sr), size))
            mid, side = (x[0] + x[1]) / 2, (x[0] - x[1]) / 2
            for share, arm in zip(args.mid_share, arms[1:], strict=True):
                m, a = code(model, mid[None], sr, share * total)
                s, b = code(model, side[None], sr, (1 - share) * total)
                y = np.concatenate([m + s, m - s])
                scores[arm].append((mel_distance(x, y, sr), mrstft_distance(x, y, sr), a + b))
        base = np.array(scores["L/R"])
        for arm in arms:
            v = np.array(scores[arm])
            kbps = v[:, 2].sum() * 8 / (len(clips) * args.seconds) / 1000
            cells = []
            for k in (0, 1):
                if arm == "L/R":
                    cells.append("")
                    continue
                mean, half, _ = mean_ci(v[:, k] - base[:, k])
                cells.append(f"{mean:+.4f} ± {half:.4f} ({int((v[:, k] < base[:, k]).sum())}/{len(clips)})")
            means = f"{v[:, 0].mean():.4f} | {v[:, 1].mean():.3f}"
            print(f"| {total:g} | {arm} | {kbps:.2f} | {means} | {cells[0]} | {cells[1]} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
