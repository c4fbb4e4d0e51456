"""Would a better pitch tracker help? Decode a model's codes with the sent pitch row replaced by librosa's
pYIN track of the reference (an encoder-side change only: the decoder and the stages stay as they are).

usage: python docs/results/band_envelope/pitch_oracle.py MODEL MANIFEST.tsv [N_Q]

pYIN runs on 64 ms windows, estimate j centred on sample j * hop. Frame i takes estimate i + lookahead,
centred where the model's own tracker centres frame i's window. Variants mix pYIN's F0 and
voicing with the sent row's. Prints mean PESQ-WB / STOI / mel and the paired PESQ-WB change (files up).
"""

from __future__ import annotations

import sys

import librosa
import numpy as np
import torch

from rotcodec.data.manifest import read_manifest
from rotcodec.dsp.pitch import MAX_F0, MIN_F0, f0_to_symbols, symbols_to_f0
from rotcodec.eval.metrics import mel_distance, pesq_wb, stoi
from rotcodec.eval.runner import load_reference
from rotcodec.inference.loading import load_model


def pyin_symbols(ref: np.ndarray, sr: int, hop: int, frames: int, offset: int) -> torch.Tensor:
    """pYIN symbols `[frames]`: estimate j is centred on sample j * hop; frame i takes estimate i + offset."""
    f0, voiced, _ = librosa.pyin(ref, fmin=MIN_F0, fmax=MAX_F0, sr=sr, frame_length=1024, hop_length=hop)
    f0 = np.where(voiced, f0, 0.0)
    f0 = np.pad(f0, (0, frames + offset + 1))[offset : offset + frames]
    return f0_to_symbols(torch.from_numpy(f0).float())


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    codec = load_model(sys.argv[1]).codec
    if codec.pitch_rows == 0:
        sys.exit(f"error: model {sys.argv[1]} has no pitch row")
    n_q = int(sys.argv[3]) if len(sys.argv) > 3 else 11
    sr, hop = codec.sample_rate, codec.hop_length
    offset = codec.pitch_tracker.cfg.lookahead
    entries = read_manifest(sys.argv[2])
    if any(e.split for e in entries):
        entries = [e for e in entries if e.split == "test"]
    scores: dict[str, list[tuple[float, float, float]]] = {}
    for entry in entries:
        ref = load_reference(entry.path, sr, 1)[0]
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(ref)[None, None], n_q=n_q, envelope=False)
        sent = codes[0, 0, 0]
        pyin = pyin_symbols(ref, sr, hop, sent.numel(), offset)
        f0_sent, f0_pyin = symbols_to_f0(sent), symbols_to_f0(pyin)
        rows = {
            "as sent": sent,
            "pYIN F0 and voicing": pyin,
            "pYIN F0 where the sent row is voiced": torch.where((sent > 0) & (pyin > 0), pyin, sent),
            "sent F0, pYIN voicing": torch.where(pyin > 0, torch.where(sent > 0, sent, pyin), 0),
            "sent row, octave errors vs pYIN fixed": torch.where(
                (sent > 0) & (pyin > 0) & ((f0_sent / f0_pyin.clamp_min(1)).log2().abs() > 0.5), pyin, sent
            ),
        }
        for name, row in rows.items():
            c = codes.clone()
            c[0, 0, 0] = row
            with torch.no_grad():
                y = codec.decode(c, envelope=False)[0, 0].numpy()[: ref.size]
            scores.setdefault(name, []).append((pesq_wb(ref, y, sr), stoi(ref, y, sr), mel_distance(ref, y, sr)))
    base = np.array(scores["as sent"])
    print(f"model {sys.argv[1]}, {len(base)} files, {n_q} stages + pitch; pYIN {MIN_F0:.0f}-{MAX_F0:.0f} Hz")
    print("| pitch row | PESQ-WB | paired Δ (files up) | STOI | mel |\n|---|---|---|---|---|")
    for name, r in scores.items():
        a = np.array(r)
        d = a[:, 0] - base[:, 0]
        print(
            f"| {name} | {a[:, 0].mean():.3f} | {d.mean():+.3f} ({(d > 0).sum()}) | {a[:, 1].mean():.4f} | "
            f"{a[:, 2].mean():.4f} |"
        )


if __name__ == "__main__":
    main()
