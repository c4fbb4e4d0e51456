"""Per-stage scale of one file's RVQ residual: rms of what each stage is given and of what it returns, and
its relative error. `python docs/results/residual_scale/residual_by_stage.py MODEL AUDIO`"""

import argparse
from pathlib import Path

import torch

from rotcodec.audio import load_audio, resample, to_channels
from rotcodec.models.io import read_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="model file (NAME / NAME.json) or checkpoint folder")
    p.add_argument("audio")
    args = p.parse_args()
    path = Path(args.model)
    codec = read_model(path / "model" if path.is_dir() else path).codec
    wav, sr = load_audio(args.audio)
    wav = resample(to_channels(wav, codec.channels), sr, codec.sample_rate)
    with torch.no_grad():
        residual = codec.embed(torch.from_numpy(wav)[None])[0].T  # [frames, latent_dim]
        print(f"latent rms {residual.pow(2).mean().sqrt():.3f}")
        for k, stage in enumerate(codec.quantizer.stages):
            value = stage.decode(stage.encode(residual))
            err = (residual - value).pow(2).sum() / residual.pow(2).sum()
            rms_in, rms_out = residual.pow(2).mean().sqrt(), value.pow(2).mean().sqrt()
            print(f"stage {k:2d}: given rms {rms_in:.3f}  returns rms {rms_out:.3f}  relative error {err:.4f}")
            residual = residual - value


if __name__ == "__main__":
    main()
