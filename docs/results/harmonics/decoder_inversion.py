"""Can the decoder reach the reference's pitch at all? Optimise its input freely and see.

usage: python docs/results/harmonics/decoder_inversion.py MODEL AUDIO [--acf W] [--lr LR] [--steps N]

Starts from the quantized latent of the first 2 s of AUDIO (all stages) and runs Adam on that latent
`[1, latent_dim, frames]` alone (decoder weights frozen) against the training losses (mel x15 + MR-STFT x1,
plus the autocorrelation loss x W, which asks for the reference's pitch). If the output's F0 stays put
while the latent is free, the pitch is fixed by the decoder, not by the codes.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rotcodec.audio import load_audio
from rotcodec.eval.periodicity import frame_pitch, periodicity_error, pitch_error
from rotcodec.inference.loading import load_model
from rotcodec.losses.adversarial import GeneratorLoss, LossConfig


def describe(tag: str, ref: np.ndarray, y: torch.Tensor) -> None:
    out = y[0, 0].detach().numpy()
    print(
        f"{tag}: pitch error {pitch_error(ref, out, 16000):.0f} cents, periodicity error "
        f"{periodicity_error(ref, out, 16000):.3f}, F0 median output {np.nanmedian(frame_pitch(out, 16000)):.1f} Hz "
        f"/ reference {np.nanmedian(frame_pitch(ref, 16000)):.1f} Hz",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("audio")
    ap.add_argument("--acf", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.manual_seed(0)
    codec = load_model(args.model).codec
    if codec.sample_rate != 16000:
        raise SystemExit("this diagnostic is written for 16 kHz speech models")
    codec.requires_grad_(False)
    wav, sr = load_audio(args.audio)
    if sr != 16000:
        raise SystemExit(f"{args.audio}: expected 16 kHz audio, got {sr} Hz")
    x = torch.from_numpy(np.ascontiguousarray(wav[:1, : 2 * sr], dtype=np.float32))[None]  # [1, 1, time]
    ref = x[0, 0].numpy()
    loss_fn = GeneratorLoss(LossConfig(mel=15, mrstft=1, acf=args.acf, adv=0, feat=0, vq=0), sr)
    with torch.no_grad():
        latent = codec.quantizer(codec.embed(x), n_q=codec.quantizer.n_q).quantized
        describe("quantized latent", ref, codec.decoder(latent)[..., : x.shape[-1]])
    latent.requires_grad_(True)
    opt = torch.optim.Adam([latent], lr=args.lr)
    for step in range(1, args.steps + 1):
        y = codec.decoder(latent)[..., : x.shape[-1]]
        total, parts = loss_fn(y, x)
        opt.zero_grad()
        total.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            losses = ", ".join(f"{k} {float(v):.3f}" for k, v in parts.items())
            describe(f"step {step} ({losses})", ref, y)


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as exc:  # missing or unreadable files, unknown model (one line, exit 1)
        raise SystemExit(f"error: {exc}") from None
