"""Band count and gain step of the envelope rows, at matched bitrate: PESQ-WB / STOI / mel against the bits the
gains cost.

usage: python docs/results/band_envelope/sweep.py MODEL MANIFEST.tsv [N_Q]

MODEL's weights decode every variant (the envelope has no weights; only its config changes). Each test file
(the manifest's test split, or all files) is encoded whole at N_Q stages (default 5) with the envelope rows
and decoded. "bits/frame" is the gains' empirical entropy per band on these same files, summed over bands: an
ideal entropy coder's cost, a little below what the model's tables achieve on unseen speakers.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch

from rotcodec.data.manifest import read_manifest
from rotcodec.eval.metrics import mel_distance, pesq_wb, stoi
from rotcodec.eval.runner import load_reference
from rotcodec.inference import load_model
from rotcodec.models import Codec
from rotcodec.models.envelope import EnvelopeConfig

HAND_16 = [0, 100, 200, 300, 400, 500, 650, 800, 1000, 1250, 1600, 2000, 2500, 3200, 4000, 5500]


def log_bands(n: int) -> list[float]:
    """n bands: 0 Hz, then n - 1 edges log-spaced from 100 Hz to 6 kHz, rounded to 10 Hz."""
    return [0.0] + [float(x) for x in np.round(np.geomspace(100, 6000, n - 1) / 10) * 10]


VARIANTS = {
    "16 bands (hand-picked), 3 dB": EnvelopeConfig(HAND_16, 3.0, 16),
    "16 bands (hand-picked), 4.5 dB": EnvelopeConfig(HAND_16, 4.5, 12),
    "16 bands (hand-picked), 6 dB": EnvelopeConfig(HAND_16, 6.0, 8),
    "20 bands, 6 dB": EnvelopeConfig(log_bands(20), 6.0, 8),
    "24 bands, 6 dB": EnvelopeConfig(log_bands(24), 6.0, 8),
    "24 bands, 8 dB": EnvelopeConfig(log_bands(24), 8.0, 6),
    "24 bands, 8 dB, 5 levels (shipped)": EnvelopeConfig(log_bands(24), 8.0, 5),
    "32 bands, 6 dB": EnvelopeConfig(log_bands(32), 6.0, 8),
    "32 bands, 9 dB": EnvelopeConfig(log_bands(32), 9.0, 6),
    "40 bands, 9 dB": EnvelopeConfig(log_bands(40), 9.0, 6),
}


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    torch.set_num_threads(2)
    base = load_model(sys.argv[1]).codec
    n_q = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    entries = read_manifest(sys.argv[2])
    if any(e.split for e in entries):
        entries = [e for e in entries if e.split == "test"]
    refs = [load_reference(e.path, base.sample_rate, 1)[0] for e in entries]
    print(f"model {sys.argv[1]}, {len(refs)} files, {n_q} stages + pitch + envelope")
    print("| envelope | PESQ-WB | STOI | mel | bits/frame | kbps |\n|---|---|---|---|---|---|")
    for name, env in VARIANTS.items():
        cfg = copy.deepcopy(base.config)
        cfg.envelope = env
        codec = Codec(cfg).eval()
        codec.load_state_dict(base.state_dict())
        scores, symbols = [], []
        for ref in refs:
            with torch.no_grad():
                codes = codec.encode(torch.from_numpy(ref)[None, None], n_q=n_q)
                y = codec.decode(codes)[0, 0].numpy()[: ref.size]
            symbols.append(codes[0, 0, codec.pitch_rows : codec.side_rows()].numpy())
            scores.append((pesq_wb(ref, y, 16000), stoi(ref, y, 16000), mel_distance(ref, y, 16000)))
        s = np.concatenate(symbols, axis=1)
        bits = 0.0
        for row in s:
            p = np.bincount(row, minlength=env.levels) / row.size
            p = p[p > 0]
            bits -= float((p * np.log2(p)).sum())
        a = np.array(scores).mean(axis=0)
        kbps = bits * codec.frame_rate / 1000
        print(f"| {name} | {a[0]:.3f} | {a[1]:.4f} | {a[2]:.4f} | {bits:.1f} | {kbps:.2f} |", flush=True)


if __name__ == "__main__":
    main()
