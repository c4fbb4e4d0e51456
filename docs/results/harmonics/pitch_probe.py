"""Can F0 be read from a model's codes? Trains a small causal conv probe on quantized latents and scores it.

usage: python docs/results/harmonics/pitch_probe.py MODEL MANIFEST.tsv [--kbps 6] [--train-files 700]
       [--steps 3000]

The probe (3 causal convs, 256 channels, receptive field 15 frames) reads the latent the decoder gets at
`--kbps` and classifies each frame's F0 into 64 log-spaced bins over 60-400 Hz or unvoiced; targets come from
`rotcodec.eval.periodicity.frame_pitch` at each frame's end. It trains on `--train-files` files of the
manifest's train split and reports, on the test split (other speakers) and on 100 unseen train-split files
(the training voices), the RMS and median error in cents over frames voiced in both, and the share of
frames more than 100 cents off. Seeded: reruns give the same numbers on the same machine.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rotcodec.audio import load_audio, resample, to_channels
from rotcodec.data.manifest import read_manifest
from rotcodec.eval.periodicity import frame_pitch
from rotcodec.inference.loading import load_model

BINS, LO, HI = 64, np.log2(60.0), np.log2(400.0)


def latents_and_f0(model, paths: list[str], n_q: int) -> list[tuple[torch.Tensor, np.ndarray]]:  # noqa: ANN001
    """Per file: (quantized latent [latent_dim, frames], F0 [frames] in Hz, NaN unvoiced)."""
    codec, out = model.codec, []
    for path in paths:
        wav, sr = load_audio(path)
        x = resample(to_channels(wav, 1), sr, codec.sample_rate)[0].astype(np.float32)
        with torch.no_grad():
            z = codec.embed(torch.from_numpy(x)[None, None])
            q = codec.quantizer.decode(codec.quantizer.encode(z, n_q))[0]
        f0 = frame_pitch(x, codec.sample_rate)  # 10 ms frames; frame 2t ends where code frame t ends (20 ms)
        idx = 2 * np.arange(q.shape[-1])
        target = np.full(q.shape[-1], np.nan)
        target[idx < f0.size] = f0[idx[idx < f0.size]]
        out.append((q, target))
    return out


def to_bins(f0: np.ndarray) -> torch.Tensor:
    b = np.full(f0.size, BINS, dtype=np.int64)
    v = ~np.isnan(f0)
    b[v] = np.clip(np.round((np.log2(f0[v]) - LO) / (HI - LO) * (BINS - 1)), 0, BINS - 1)
    return torch.from_numpy(b)


def from_logits(logits: torch.Tensor) -> np.ndarray:
    """[frames, BINS + 1] -> F0 in Hz (NaN unvoiced), refined by the probability-weighted bin near the peak."""
    p = logits.softmax(-1)
    peak = p[:, :BINS].argmax(-1)
    near = ((torch.arange(BINS)[None] - peak[:, None]).abs() <= 2).float() * p[:, :BINS]
    b = (near * torch.arange(BINS)).sum(-1) / near.sum(-1)
    f0 = 2 ** (LO + b / (BINS - 1) * (HI - LO))
    f0[p[:, BINS] > 0.5] = float("nan")
    return f0.numpy()


class CausalConv(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, ((self.kernel_size[0] - 1) * self.dilation[0], 0)))


def score(probe: nn.Module, items: list[tuple[torch.Tensor, np.ndarray]]) -> str:
    errs = []
    with torch.no_grad():
        for q, f0 in items:
            est = from_logits(probe(q[None])[0].T)
            both = ~np.isnan(f0) & ~np.isnan(est)
            errs.append(1200 * np.log2(est[both] / f0[both]))
    e = np.abs(np.concatenate(errs))
    return (
        f"RMS {np.sqrt(np.mean(e**2)):.0f} cents, median {np.median(e):.0f}, "
        f"more than 100 cents off {np.mean(e > 100):.0%} ({e.size} frames voiced in both)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("manifest")
    p.add_argument("--kbps", type=float, default=6.0)
    p.add_argument("--train-files", type=int, default=700)
    p.add_argument("--steps", type=int, default=3000)
    args = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = load_model(args.model)
    n_q = model.plan(kbps=args.kbps, envelope=None).n_q
    entries = read_manifest(args.manifest)

    def paths(split: str) -> list[str]:
        return [e.path for e in entries if e.split == split]

    train = paths("train")
    rng.shuffle(train)
    fit = latents_and_f0(model, train[: args.train_files], n_q)
    probe = nn.Sequential(
        CausalConv(fit[0][0].shape[0], 256, 3),
        nn.ELU(),
        CausalConv(256, 256, 3, dilation=2),
        nn.ELU(),
        CausalConv(256, 256, 3, dilation=4),
        nn.ELU(),
        nn.Conv1d(256, BINS + 1, 1),
    )
    opt = torch.optim.Adam(probe.parameters(), 1e-3)
    width = 50
    for _ in range(args.steps):
        xs, ys = [], []
        for i in rng.integers(0, len(fit), 32):
            q, t = fit[i][0], to_bins(fit[i][1])
            if q.shape[-1] < width:
                q, t = F.pad(q, (0, width - q.shape[-1])), F.pad(t, (0, width - t.numel()), value=BINS)
            s = int(rng.integers(0, q.shape[-1] - width + 1))
            xs.append(q[:, s : s + width])
            ys.append(t[s : s + width])
        loss = F.cross_entropy(
            probe(torch.stack(xs)).transpose(1, 2).reshape(-1, BINS + 1), torch.stack(ys).reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(
        f"{args.model} at {args.kbps:g} kbps ({n_q} stages), probe trained on {len(fit)} files, final loss {loss:.3f}"
    )
    print("test speakers:      " + score(probe, latents_and_f0(model, paths("test"), n_q)))
    held = train[args.train_files : args.train_files + 100]
    print("training voices:    " + score(probe, latents_and_f0(model, held, n_q)))


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as exc:  # missing or unreadable files, unknown model (one line, exit 1)
        raise SystemExit(f"error: {exc}") from None
