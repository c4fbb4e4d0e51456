"""Is the transmitted pitch on time? Decode a model's codes with the pitch row as sent, one frame earlier, two
frames earlier and one frame later, and score each decode against the reference.

usage: python docs/results/harmonics/pitch_lag.py MODEL MANIFEST.tsv [N_Q]

Each file is encoded whole at N_Q stages (default 11: 6 kbps with the pitch row) and decoded four times; only
the pitch row moves (its last frames repeat the last symbol). Prints mean PESQ-WB / STOI / mel distance per
shift, and the paired difference of "one frame earlier" against "as sent". A decode that gains from the early
row means the sent pitch lags the voice: the tracker should read ahead (`PitchConfig.lookahead`).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from rotcodec.data.manifest import read_manifest
from rotcodec.eval.metrics import mel_distance, pesq_wb, stoi
from rotcodec.eval.runner import load_reference
from rotcodec.inference.loading import load_model

SHIFTS = {"as sent": 0, "1 frame earlier": -1, "2 frames earlier": -2, "1 frame later": 1}


def shifted(codes: torch.Tensor, shift: int) -> torch.Tensor:
    """codes `[batch, channels, rows, frames]` with row 0 (pitch) moved by `shift` frames, edges repeated."""
    out = codes.clone()
    pitch = codes[:, :, 0]
    if shift < 0:
        out[:, :, 0, :shift] = pitch[..., -shift:]
        out[:, :, 0, shift:] = pitch[..., -1:]
    elif shift > 0:
        out[:, :, 0, shift:] = pitch[..., :-shift]
        out[:, :, 0, :shift] = pitch[..., :1]
    return out


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    codec = load_model(sys.argv[1]).codec
    if codec.pitch_rows == 0:
        sys.exit(f"error: model {sys.argv[1]} sends no pitch")
    n_q = int(sys.argv[3]) if len(sys.argv) > 3 else 11
    scores: dict[str, list[tuple[float, float, float]]] = {k: [] for k in SHIFTS}
    for entry in read_manifest(sys.argv[2]):
        ref = load_reference(entry.path, codec.sample_rate, 1)[0]
        wav = torch.from_numpy(ref)[None, None]
        with torch.no_grad():
            codes = codec.encode(wav, n_q=n_q)
            for name, shift in SHIFTS.items():
                y = codec.decode(shifted(codes, shift))[0, 0, : ref.size].numpy()
                sr_m = codec.sample_rate
                scores[name].append((pesq_wb(ref, y, sr_m), stoi(ref, y, sr_m), mel_distance(ref, y, sr_m)))
    print(f"model {sys.argv[1]}, {len(scores['as sent'])} files, {n_q} stages + pitch")
    print("| pitch row | PESQ-WB | STOI | mel |\n|---|---|---|---|")
    for name, rows in scores.items():
        print("| {} | {:.3f} | {:.4f} | {:.4f} |".format(name, *np.mean(rows, axis=0)))
    d = np.array(scores["1 frame earlier"]) - np.array(scores["as sent"])
    print(
        f"1 frame earlier - as sent: PESQ-WB {d[:, 0].mean():+.3f} (± {d[:, 0].std() / np.sqrt(len(d)):.3f}, "
        f"{(d[:, 0] > 0).sum()} of {len(d)} files better), STOI {d[:, 1].mean():+.4f}, mel {d[:, 2].mean():+.4f}"
    )


if __name__ == "__main__":
    main()
