"""Does a codec use its stages? Mel distance when decoding with 1..24 stages, the latent's relative
quantization error after that many stages (1 = the residual never shrinks), and the latent's effective
dimension, over held-out files.

    python docs/results/latent_collapse/diag_stages.py MODEL_OR_CHECKPOINT DATA [--max-files 8]

MODEL_OR_CHECKPOINT: a model file (NAME / NAME.json) or a checkpoint folder (RUN/checkpoints/step_N);
DATA: folder, glob, audio file or manifest (a manifest's `test` split when it has one).
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from rotcodec.audio import load_audio, resample, to_channels
from rotcodec.data.manifest import find_audio
from rotcodec.eval.metrics import mel_distance
from rotcodec.models.io import read_model
from rotcodec.train.diagnostics import latent_effective_dims


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--max-files", type=int, default=8)
    p.add_argument("--n-q", type=int, nargs="+", default=[1, 3, 6, 12, 24])
    args = p.parse_args()
    torch.set_num_threads(1)
    path = Path(args.model)
    codec = read_model(path / "model" if path.is_dir() else path).codec
    entries = find_audio([args.data])
    if any(e.split == "test" for e in entries):
        entries = [e for e in entries if e.split == "test"]
    sr = codec.sample_rate
    mels: dict[int, list[float]] = {n: [] for n in args.n_q if n <= codec.n_q}
    latents = []
    for e in entries[: args.max_files]:
        wav, file_sr = load_audio(e.path)
        wav = resample(to_channels(wav, codec.channels), file_sr, sr)
        x = torch.from_numpy(wav)[None]
        with torch.no_grad():
            latents.append(codec.embed(x))
            for n in mels:
                y = codec.decode(codec.encode(x, n))[0, :, : wav.shape[-1]].numpy()
                mels[n].append(mel_distance(wav, y, sr))
    z = torch.cat(latents, dim=-1)
    dims = [latent_effective_dims(z, f) for f in (0.9, 0.99)]
    with torch.no_grad():
        errors = {
            n: (z - codec.quantizer.decode(codec.quantizer.encode(z, n))).pow(2).sum() / z.pow(2).sum() for n in mels
        }
    table = " ".join(f"@{n}={np.mean(v):.4f}" for n, v in mels.items())
    residual = " ".join(f"@{n}={float(e):.3f}" for n, e in errors.items())
    print(
        f"{args.model}: mel distance by stages {table} | latent error by stages {residual}"
        f" | latent dims 90%/99%: {dims[0]}/{dims[1]}"
    )


if __name__ == "__main__":
    main()
