"""Spectrogram of a held-out file and of its decoding at 6 kbps, 0.5-1.5 s, 0-4 kHz (spectrogram_6kbps.png here).

python docs/results/default_model_step9000/spectrogram.py MODEL AUDIO OUT.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rotcodec.audio import load_audio, resample, to_channels  # noqa: E402
from rotcodec.inference import load_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("audio")
    p.add_argument("out")
    args = p.parse_args()
    model = load_model(args.model)
    sr = model.sample_rate
    wav, file_sr = load_audio(args.audio)
    x = resample(to_channels(wav, 1), file_sr, sr)[0]
    y = model.decompress(model.compress(x, sr, kbps=6))[0].reshape(-1)[: x.size]
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for ax, signal, title in zip(axes, (x, y), ("input", f"{args.model} at 6 kbps"), strict=True):
        ax.specgram(signal[sr // 2 : 3 * sr // 2], NFFT=512, Fs=sr, noverlap=384, vmin=-120)
        ax.set_title(title)
        ax.set_ylabel("Hz")
        ax.set_ylim(0, 4000)  # where the harmonics (or their absence) show
    axes[-1].set_xlabel("seconds from 0.5 s")
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)


if __name__ == "__main__":
    main()
