"""Do the stages of a residual VQ refine? Latent and reconstruction error against the number of stages, per design.

What it measures: for each quantizer design (a dict of `ResidualVQ` keyword arguments) and seed, a small MLP
autoencoder (128 -> 256 -> 128, RVQ bottleneck, 128 -> 256 -> 128) is trained on fixed log-STFT features of real
audio. On the held-out frames (the last 20%), in eval mode, it reports for the first n = 1, 2, 4, ... stages
  latent error  ||z - RVQ_n(z)||^2 / ||z||^2              (z: encoder output)
  recon error   ||x - dec(RVQ_n(z))||^2 / ||x - mean(x)||^2
and, with all stages, each stage's code usage (fraction of the codebook used on the held-out frames) and
perplexity, and the rotation trick's fallback count (all stages summed; also over training, as a share of rows).
Each cell is mean ± 95% t-interval over seeds; "refines" is yes when the mean latent error falls at every
doubling of the stages. Unless a design sets it, the dead-code threshold is scaled to the batch as in the recipes
(`--dead-code-share`); VQConfig's default of 2 would replace most of 256 codes at every 256-frame step.

Why: extra stages (bits) buy quality only if each stage shrinks the residual it is given. A stage whose output is
unrelated to its input's scale leaves the residual as large as before, and the stages then act as parallel
quantizers rather than coarse-to-fine ones (docs/results/residual_scale). No codec is involved, so a design's
effect on refinement is seen in minutes rather than training runs.

    python benchmarks/rvq_refine.py                                   # all designs, 3 seeds, samples/
    python benchmarks/rvq_refine.py --designs full unit raw --seeds 5 --data /data/LibriTTS/dev-clean --json r.json

Default settings (8 designs x 3 seeds x 500 steps of 256 frames on the 11 s of speech in samples/) take 3.5 to
5.5 minutes on one CPU thread (measured on a busy 2-core machine). With samples/ the held-out set is ~220
frames, so usage cannot exceed ~220/K, and 882 training frames let 256 codes per stage memorise much of them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F
from torch import nn

from rotcodec.eval.report import mean_ci
from rotcodec.quantize import ResidualVQ, RVQOutput

SR = 16000
N_FFT, HOP = 512, 160
FEATURE_DIM, HIDDEN = 128, 256
HOLDOUT = 0.2
FEATURE_SEED = 1234  # the projection does not depend on the run's seed: every run sees the same features
AUDIO_SUFFIXES = (".wav", ".flac")
DEFAULT_DATA = Path(__file__).resolve().parent.parent / "samples"
FOOTER = """
latent, recon: relative squared error on held-out frames after n stages (lower is better). usage, perplexity:
per-stage mean on held-out frames. fallbacks: rotation-trick rows falling back to STE on held-out frames;
train fallback %: the same over all training steps, as a share of stage-rows. refines: mean latent error falls
at every doubling of the stages."""

# One line per design. Anything here goes to ResidualVQ(**kwargs) and on to RVQConfig/VQConfig, so a field
# added to VQConfig later can be set in a design without touching the rest of the script.
FULL: dict[str, Any] = {"codebook_dim": None, "ema_decay": 0.99, "estimator": "rotation", "wiring": "detached"}
UNIT: dict[str, Any] = {**FULL, "codebook_dim": 8, "factorised_values": "unit"}
DESIGNS: dict[str, dict[str, Any]] = {
    "full": FULL,
    "full-ste": {**FULL, "estimator": "ste"},
    "full-chained": {**FULL, "wiring": "chained"},
    "full-learned": {**FULL, "ema_decay": None},
    "unit": UNIT,
    "raw": {**UNIT, "factorised_values": "raw"},
    "full-qd": {**FULL, "quantizer_dropout": 0.5},
    "unit-qd": {**UNIT, "quantizer_dropout": 0.5},
}


def audio_files(data: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in data:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"rvq_refine: no such file or folder: {item}")
    if not files:
        raise SystemExit(f"rvq_refine: no .wav/.flac files in {data}")
    return files


def load_16k(path: Path) -> torch.Tensor:
    """Mono float32 at 16 kHz."""
    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = wav.mean(axis=1)
    if sr != SR:
        mono = soxr.resample(mono, sr, SR)
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


def log_stft(wav: torch.Tensor) -> torch.Tensor:
    """`[time]` -> log-magnitude frames `[frames, N_FFT // 2 + 1]`."""
    spec = torch.stft(wav, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    return torch.log(spec.abs() + 1e-5).T


def features(files: list[Path], dim: int = FEATURE_DIM) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) feature rows `[frames, dim]`; held out: the last HOLDOUT share of all frames."""
    wavs = [load_16k(f) for f in files]
    frames = torch.cat([log_stft(w) for w in wavs if w.numel() > N_FFT])  # reflect padding needs > N_FFT/2
    n_eval = max(1, round(HOLDOUT * frames.shape[0]))
    train, held = frames[:-n_eval], frames[-n_eval:]
    # Training statistics only, so nothing about the held-out frames leaks into the features.
    mean, std = train.mean(0), train.std(0).clamp_min(1e-5)
    gen = torch.Generator().manual_seed(FEATURE_SEED)
    proj, _ = torch.linalg.qr(torch.randn(frames.shape[1], dim, generator=gen))  # orthonormal columns
    return ((train - mean) / std) @ proj, ((held - mean) / std) @ proj


class AutoEncoder(nn.Module):
    def __init__(self, rvq: ResidualVQ, dim: int = FEATURE_DIM, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.rvq = rvq
        self.dec = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def quantize(self, z: torch.Tensor, n_q: int | None = None) -> tuple[torch.Tensor, RVQOutput]:
        # One frame is one example (time length 1), so quantizer dropout draws its stage count per frame.
        out = self.rvq(z.unsqueeze(-1), n_q=n_q)
        return out.quantized.squeeze(-1), out


def batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless row indices: epochs of seeded permutations, each frame at most once per epoch."""
    batch = min(batch, n)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            yield perm[i : i + batch]


def train(design: dict[str, Any], x: torch.Tensor, args: argparse.Namespace, seed: int) -> tuple[AutoEncoder, float]:
    """Train one autoencoder; returns it and the rotation fallbacks summed over all steps and stages."""
    torch.manual_seed(seed)  # weights, k-means init, dead-code picks, quantizer dropout
    gen = torch.Generator().manual_seed(seed)
    # The recipes set the dead-code threshold relative to the mean uses per code per batch (speech16k: 0.02 for
    # 0.4); VQConfig's default of 2 would, at 256 frames over 256 codes, replace most codes every step.
    dead = args.dead_code_share * min(args.batch, x.shape[0]) / args.codebook_size
    kwargs = {"dead_code_threshold": dead, **design}
    rvq = ResidualVQ(dim=x.shape[1], n_q=args.stages, codebook_size=args.codebook_size, **kwargs)
    model = AutoEncoder(rvq, dim=x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    fallback = torch.zeros(())
    model.train()
    for _, idx in zip(range(args.steps), batches(x.shape[0], args.batch, gen), strict=False):
        xb = x[idx]
        q, out = model.quantize(model.enc(xb))
        loss = F.mse_loss(model.dec(q), xb) + out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        fallback += out.stats["vq/rotation_fallback"]
    return model, float(fallback)


def stage_counts(n_q: int) -> list[int]:
    """1, 2, 4, ... up to n_q, with n_q itself last even when it is not a power of two."""
    counts = [2**i for i in range(int(math.log2(n_q)) + 1)]
    return counts if counts[-1] == n_q else [*counts, n_q]


@torch.no_grad()
def evaluate(model: AutoEncoder, x: torch.Tensor, counts: list[int]) -> dict[str, Any]:
    model.eval()
    z = model.enc(x)
    spread = (x - x.mean(0)).pow(2).sum()
    latent, recon = [], []
    for n in counts:
        q, out = model.quantize(z, n_q=n)
        latent.append(float((z - q).pow(2).sum() / z.pow(2).sum()))
        recon.append(float((x - model.dec(q)).pow(2).sum() / spread))
    n_q = model.rvq.n_q  # `out` is from the last count, i.e. all stages
    return {
        "latent": latent,
        "recon": recon,
        "usage": [float(out.stats[f"vq{k}/usage"]) for k in range(n_q)],
        "perplexity": [float(out.stats[f"vq{k}/perplexity"]) for k in range(n_q)],
        "fallback_eval": float(out.stats["vq/rotation_fallback"]),
    }


def interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and 95% t-interval half-width across seeds (None for a single seed)."""
    mean, half, _ = mean_ci(values)
    return mean, half if math.isfinite(half) else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed results of one design -> mean/half-width per column, and the refines verdict."""
    cols: dict[str, list[float]] = {}
    for i in range(len(runs[0]["latent"])):
        cols[f"latent{i}"] = [r["latent"][i] for r in runs]
        cols[f"recon{i}"] = [r["recon"][i] for r in runs]
    cols["usage"] = [float(np.mean(r["usage"])) for r in runs]
    cols["perplexity"] = [float(np.mean(r["perplexity"])) for r in runs]
    cols["fallbacks"] = [r["fallback_eval"] for r in runs]
    cols["train_fallback_pct"] = [r["train_fallback_pct"] for r in runs]
    summary = {k: interval(v) for k, v in cols.items()}
    latent = [summary[f"latent{i}"][0] for i in range(len(runs[0]["latent"]))]
    summary["refines"] = all(b < a for a, b in zip(latent, latent[1:], strict=False))
    return summary


def cell(value: tuple[float, float | None], digits: int) -> str:
    mean, half = value
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} ± {half:.{digits}f}"


def format_table(summaries: dict[str, dict[str, Any]], counts: list[int]) -> str:
    header = ["design", *(f"latent @{n}" for n in counts), *(f"recon @{n}" for n in counts)]
    header += ["usage", "perplexity", "fallbacks", "train fallback %", "refines"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in summaries.items():
        row = [name, *(cell(s[f"latent{i}"], 3) for i in range(len(counts)))]
        row += [cell(s[f"recon{i}"], 3) for i in range(len(counts))]
        row += [cell(s["usage"], 3), cell(s["perplexity"], 1), cell(s["fallbacks"], 0)]
        row.append(cell(s["train_fallback_pct"], 2))
        row.append("yes" if s["refines"] else "no")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--data", nargs="+", default=[str(DEFAULT_DATA)], help="folders (recursive) or .wav/.flac files")
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS), metavar="NAME")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=256, help="frames per step")
    p.add_argument("--stages", type=int, default=8)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--dead-code-share",
        type=float,
        default=0.05,
        help="dead-code threshold as a share of the mean uses per code per batch (0.05 as in speech16k.yaml)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write every number here")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.stages < 1:
        p.error("--seeds, --steps and --stages must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table; returns every number and the table (key "table")."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    files = audio_files(args.data)
    x_train, x_eval = features(files)
    counts = stage_counts(args.stages)
    print(
        f"{len(files)} files, {x_train.shape[0]} training / {x_eval.shape[0]} held-out frames; "
        f"{args.stages} stages x {args.codebook_size} codes, {args.steps} steps x {args.batch}, {args.seeds} seeds"
    )
    results: dict[str, Any] = {"config": {**vars(args), "files": [str(f) for f in files]}}
    results["config"].update(stage_counts=counts, train_frames=x_train.shape[0], eval_frames=x_eval.shape[0])
    results["designs"] = {}
    summaries = {}
    for name in args.designs:
        runs = []
        for seed in range(args.seeds):
            t_run = time.perf_counter()
            model, fallback_train = train(DESIGNS[name], x_train, args, seed)
            run = evaluate(model, x_eval, counts)
            rows = args.steps * min(args.batch, x_train.shape[0]) * args.stages
            run.update(seed=seed, fallback_train=fallback_train, train_fallback_pct=100 * fallback_train / rows)
            runs.append({**run, "seconds": time.perf_counter() - t_run})
        summaries[name] = summarise(runs)
        results["designs"][name] = {"kwargs": DESIGNS[name], "runs": runs, "summary": summaries[name]}
        print(f"  {name}: {sum(r['seconds'] for r in runs):.1f} s", flush=True)
    table = format_table(summaries, counts)
    results["table"] = table
    results["seconds"] = time.perf_counter() - t0
    print()
    print(table)
    print(FOOTER)
    print(f"total {results['seconds']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
