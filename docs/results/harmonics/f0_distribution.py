"""F0 the codec puts out against the F0 it was given, over the voiced frames of a manifest's files.

usage: python docs/results/harmonics/f0_distribution.py MODEL MANIFEST.tsv [KBPS]

Prints the 10/50/90th percentiles of the reference's and the output's F0 (rotcodec.eval.periodicity.frame_pitch,
10 ms frames), their correlation over frames voiced in both, and the output's most common F0 bins. A decoder
that ignores the speaker's pitch shows a narrow output distribution and a low correlation. For a model with
a transmitted pitch (`models/harmonic.py`) it also prints the harmonic source's share of the output energy.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from rotcodec.audio import load_audio
from rotcodec.bitstream import decode_bytes
from rotcodec.data.manifest import read_manifest
from rotcodec.eval.periodicity import frame_pitch
from rotcodec.eval.runner import align_estimate
from rotcodec.inference.loading import load_model


def harmonic_share(model, data: bytes) -> tuple[float, float]:  # noqa: ANN001
    """(energy of the harmonic source, energy of the whole output) of one `.rcq` stream's decode."""
    codec = model.codec
    codes = torch.from_numpy(decode_bytes(data, model.code_counts)[1])[:1, None]  # first channel: [1, 1, rows, frames]
    with torch.no_grad():
        z = codec.quantizer.decode(codes[:, 0, 1:])
        harm = codec.harmonic(z, codes[:, 0, 0])
    return float((harm**2).sum()), float((codec.decode(codes) ** 2).sum())


def main() -> None:
    model_path, manifest = sys.argv[1], sys.argv[2]
    kbps = float(sys.argv[3]) if len(sys.argv) > 3 else 6.0
    model = load_model(model_path)
    paths = [e.path for e in read_manifest(manifest)]
    ref_f0, out_f0, energy = [], [], np.zeros(2)
    for path in paths:
        wav, sr = load_audio(path)
        x = wav[:1]  # [1, time]
        data = model.compress(x, sr, kbps=kbps)
        if model.codec.harmonic is not None:
            energy += harmonic_share(model, data)
        y, _ = align_estimate(x, model.decompress(data)[0][:, : x.shape[-1]], model.hop_length)
        x, y = x[0], y[0]
        a, b = frame_pitch(x, sr), frame_pitch(y, sr)
        n = min(a.size, b.size)
        ref_f0.append(a[:n])
        out_f0.append(b[:n])
    r, o = np.concatenate(ref_f0), np.concatenate(out_f0)
    both = ~np.isnan(r) & ~np.isnan(o)
    print(
        f"{len(paths)} files, {r.size} frames; voiced: reference {np.mean(~np.isnan(r)):.2f}, output "
        f"{np.mean(~np.isnan(o)):.2f}, both {both.mean():.2f}"
    )
    print(
        "F0 percentiles 10/50/90 (Hz): reference",
        np.nanpercentile(r, [10, 50, 90]).round(1),
        "output",
        np.nanpercentile(o, [10, 50, 90]).round(1),
    )
    print(f"F0 correlation over frames voiced in both: {np.corrcoef(r[both], o[both])[0, 1]:.3f}")
    if model.codec.harmonic is not None:
        print(f"harmonic source: {energy[0] / energy[1]:.0%} of the output energy")
    counts, edges = np.histogram(o[~np.isnan(o)], bins=np.arange(60, 410, 10))
    top = np.argsort(counts)[::-1][:4]
    share = ", ".join(f"{edges[i]:.0f}-{edges[i + 1]:.0f} Hz: {counts[i] / counts.sum():.0%}" for i in top)
    print(f"output's commonest F0 bins: {share}")
    # A decoder built from transposed convolutions can repeat its per-frame pattern: then its periods are
    # whole multiples of an upsampling stage's sample period (hop / product of the first k strides).
    strides = model.codec.config.strides[::-1]  # decoder order
    grid = model.hop_length
    for s in strides[:-1]:
        grid //= s
        for name, f in (("reference", r), ("output", o)):
            period = model.sample_rate / f[~np.isnan(f)]  # in the model's samples, like the grid
            off = np.abs(period - grid * np.round(period / grid))
            print(
                f"{name}: share of voiced frames with a period within 0.5 samples of a multiple of {grid} "
                f"samples: {np.mean(off <= 0.5):.0%} (chance {min(1.0, 1 / grid):.0%})"
            )


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as exc:  # missing or unreadable files, unknown model (one line, exit 1)
        raise SystemExit(f"error: {exc}") from None
