"""Scale and spread of a codec's encoder latent on validation crops: rms, the largest per-channel mean and the
variance share of the top principal components. Shows the unbounded latent of music24k with unit code values.

usage: python docs/results/music24k_raw/latent_scale.py MANIFEST.tsv MODEL [MODEL ...]
MODEL: a checkpoint folder's `model` stem (runs/x/checkpoints/step_N/model) or an exported model.
"""

from __future__ import annotations

import argparse

import torch

from rotcodec.data.dataset import DataConfig, build_datasets
from rotcodec.models.io import read_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("models", nargs="+")
    p.add_argument("--crops", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(2)
    batch = None
    for path in args.models:
        codec = read_model(path).codec.float().eval()
        if batch is None:  # the same validation crops (at the first model's rate) for every model
            cfg = DataConfig(sources=[args.manifest], sample_rate=codec.sample_rate, valid_items=args.crops)
            _, valid = build_datasets(cfg)
            batch = torch.stack([valid[i] for i in range(args.crops)])
        with torch.no_grad():
            z = codec.encoder(codec._fold(batch))
        rows = z.transpose(1, 2).reshape(-1, z.shape[1]).double()
        eig = torch.linalg.eigvalsh(torch.cov(rows.T)).flip(0)
        top = ", ".join(f"{v:.3f}" for v in (eig[:3] / eig.sum()).tolist())
        rms, offset = rows.pow(2).mean().sqrt(), rows.mean(0).abs().max()
        print(f"{path}: latent rms {rms:.1f}, largest |channel mean| {offset:.1f}, top 3 components' variance {top}")


if __name__ == "__main__":
    main()
