"""Would a per-band gain on the SEANet residual help? An offline probe that turns the residual down above a split
frequency in voiced frames (what such a gain could learn to do) and scores the decode.

usage: python docs/results/harmonics/residual_band_probe.py MODEL MANIFEST.tsv [N_Q]

Each file is encoded whole at N_Q stages (default 11) and decoded as harmonic source + residual, with the
residual's part above the split (a brick-wall FFT filter over the whole file: an upper bound no causal filter
reaches) scaled in voiced frames. Prints mean PESQ-WB / STOI / mel distance per variant and the paired PESQ
difference against the unchanged decode.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from rotcodec.data.manifest import read_manifest
from rotcodec.eval.metrics import mel_distance, pesq_wb, stoi
from rotcodec.eval.runner import load_reference
from rotcodec.inference.loading import load_model

# name: (split in Hz, gain above it in voiced frames); split 0 scales the whole residual
VARIANTS = {
    "unchanged": (0, 1.0),
    "above 1 kHz x0.5": (1000, 0.5),
    "above 1 kHz x0.25": (1000, 0.25),
    "above 1 kHz x0": (1000, 0.0),
    "above 2 kHz x0.5": (2000, 0.5),
    "all x0.7": (0, 0.7),
}


def parts(codec, wav: torch.Tensor, n_q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """(harmonic source, gained residual, voiced mask per sample) of one mono file's decode."""
    with torch.no_grad():
        codes = codec.encode(wav, n_q=n_q)[:, 0]  # [1, rows, frames]
        z = codec.quantizer.decode(codes[:, 1:])
        harmonic = codec.harmonic(z, codes[:, 0], None)
        full = codec.harmonic(z, codes[:, 0], codec.decoder(z))
    voiced = np.repeat((codes[0, 0] > 0).numpy().astype(np.float32), codec.hop_length)
    return harmonic[0, 0].numpy(), (full - harmonic)[0, 0].numpy(), voiced


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    codec = load_model(sys.argv[1]).codec
    if codec.pitch_rows == 0:
        sys.exit(f"error: model {sys.argv[1]} has no harmonic source")
    n_q = int(sys.argv[3]) if len(sys.argv) > 3 else 11
    sr = codec.sample_rate
    scores: dict[str, list[tuple[float, float, float]]] = {k: [] for k in VARIANTS}
    for entry in read_manifest(sys.argv[2]):
        ref = load_reference(entry.path, sr, 1)[0]
        harmonic, residual, voiced = parts(codec, torch.from_numpy(ref)[None, None], n_q)
        spectrum = np.fft.rfft(residual)
        freqs = np.fft.rfftfreq(residual.size, 1 / sr)
        for name, (split, gain) in VARIANTS.items():
            high = np.fft.irfft(spectrum * (freqs >= split), n=residual.size)
            y = (harmonic + residual - high + high * (1 - (1 - gain) * voiced))[: ref.size]
            scores[name].append((pesq_wb(ref, y, sr), stoi(ref, y, sr), mel_distance(ref, y, sr)))
    base = np.array(scores["unchanged"])
    print(f"model {sys.argv[1]}, {len(base)} files, {n_q} stages + pitch")
    print("| residual in voiced frames | PESQ-WB | paired Δ (files up) | STOI | mel |\n|---|---|---|---|---|")
    for name, rows in scores.items():
        a = np.array(rows)
        d = a[:, 0] - base[:, 0]
        print(
            f"| {name} | {a[:, 0].mean():.3f} | {d.mean():+.3f} ({(d > 0).sum()}) | {a[:, 1].mean():.4f} | "
            f"{a[:, 2].mean():.4f} |"
        )


if __name__ == "__main__":
    main()
