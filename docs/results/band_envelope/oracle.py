"""What keeps PESQ-WB and STOI low: the decode's STFT magnitude or its phase, its spectral envelope or its fine
structure, which band, or noise in pauses? Oracle swaps that put a piece of the reference into the decode.

usage: python docs/results/band_envelope/oracle.py MODEL MANIFEST.tsv [N_Q]

Each file of the manifest's test split (all files if it has no split column) is encoded whole at N_Q stages
(default 11, the 6 kbps setting with a pitch row) and decoded without envelope rows (the decoder alone).
Every variant is scored with PESQ-WB, STOI and mel distance; the table gives the mean and the paired
PESQ-WB change against the plain decode (files up).
STFT: 512-point Hann, hop 128 (32 ms at 16 kHz, PESQ's frame). Envelope: the log magnitude's first 30
cepstral coefficients (quefrency under 1.9 ms, below any pitch period), fine structure: the rest.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from rotcodec.data.manifest import read_manifest
from rotcodec.eval.metrics import mel_distance, pesq_wb, stoi
from rotcodec.eval.runner import load_reference
from rotcodec.inference.loading import load_model

N_FFT, HOP, LIFTER = 512, 128, 30
BANDS_HZ = ((0, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 8000))


def stft(x: np.ndarray) -> torch.Tensor:
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    return torch.stft(torch.from_numpy(x).double(), N_FFT, HOP, window=window, return_complex=True)


def istft(spec: torch.Tensor, n: int) -> np.ndarray:
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    return torch.istft(spec, N_FFT, HOP, window=window, length=n).numpy().astype(np.float32)


def envelope(spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cepstrally smoothed log magnitude, log magnitude), both `[bins, frames]`."""
    log_mag = torch.log(spec.abs() + 1e-7)
    cep = torch.fft.irfft(log_mag, dim=0)
    lifter = torch.zeros(cep.shape[0], 1, dtype=cep.dtype)
    lifter[:LIFTER] = 1
    lifter[-LIFTER + 1 :] = 1
    return torch.fft.rfft(cep * lifter, dim=0).real, log_mag


def pause_gate(y: np.ndarray, ref: np.ndarray, below_db: float, frame: int = 320) -> np.ndarray:
    """y muted (10 ms fades) in the 20 ms frames where the reference is `below_db` under its loudest frame."""
    n = ref.size // frame * frame
    rms = np.sqrt((ref[:n].reshape(-1, frame) ** 2).mean(1) + 1e-12)
    keep = np.repeat((20 * np.log10(rms / rms.max()) > -below_db).astype(np.float32), frame)
    fade = np.hanning(161)
    keep = np.convolve(keep, fade / fade.sum(), mode="same")
    out = y.copy()
    out[:n] *= keep
    return out


def variants(ref: np.ndarray, y: np.ndarray, sr: int) -> dict[str, np.ndarray]:
    n = ref.size
    R, Y = stft(ref), stft(y)
    y_phase, r_phase = torch.exp(1j * Y.angle()), torch.exp(1j * R.angle())
    r_env, r_log = envelope(R)
    y_env, y_log = envelope(Y)
    out = {
        "decode": y,
        "reference through the STFT (check)": istft(R, n),
        "decode magnitude, reference phase": istft(Y.abs() * r_phase, n),
        "reference magnitude, decode phase": istft(R.abs() * y_phase, n),
        "decode envelope, reference fine structure": istft(torch.exp(y_env + r_log - r_env) * y_phase, n),
        "reference envelope, decode fine structure": istft(torch.exp(r_env + y_log - y_env) * y_phase, n),
    }
    freqs = torch.fft.rfftfreq(N_FFT, 1 / sr)[:, None]
    for lo, hi in BANDS_HZ:
        band = (freqs >= lo) & (freqs < hi)
        out[f"reference magnitude in {lo}-{hi} Hz"] = istft(torch.where(band, R.abs(), Y.abs()) * y_phase, n)
    out["decode muted where the reference is 40 dB down"] = pause_gate(y, ref, 40)
    return out


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    codec = load_model(sys.argv[1]).codec
    n_q = int(sys.argv[3]) if len(sys.argv) > 3 else 11
    sr = codec.sample_rate
    entries = read_manifest(sys.argv[2])
    if any(e.split for e in entries):
        entries = [e for e in entries if e.split == "test"]
    scores: dict[str, list[tuple[float, float, float]]] = {}
    for entry in entries:
        ref = load_reference(entry.path, sr, 1)[0]
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(ref)[None, None], n_q=n_q, envelope=False)
            y = codec.decode(codes, envelope=False)[0, 0].numpy()[: ref.size]
        for name, x in variants(ref, y, sr).items():
            scores.setdefault(name, []).append((pesq_wb(ref, x, sr), stoi(ref, x, sr), mel_distance(ref, x, sr)))
    base = np.array(scores["decode"])
    print(f"model {sys.argv[1]}, {len(base)} files, {n_q} stages, STFT {N_FFT}/{HOP}")
    print("| variant | PESQ-WB | paired Δ (files up) | STOI | mel |\n|---|---|---|---|---|")
    for name, rows in scores.items():
        a = np.array(rows)
        d = a[:, 0] - base[:, 0]
        print(
            f"| {name} | {a[:, 0].mean():.3f} | {d.mean():+.3f} ({(d > 0).sum()}) | {a[:, 1].mean():.4f} | "
            f"{a[:, 2].mean():.4f} |"
        )


if __name__ == "__main__":
    main()
