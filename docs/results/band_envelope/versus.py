"""Per-file paired differences between two codec settings of one `rotcodec eval` results.csv (A - B).

usage: python docs/results/band_envelope/versus.py RESULTS.csv CODEC_A SETTING_A CODEC_B SETTING_B
e.g.   python docs/results/band_envelope/versus.py docs/results/band_envelope/results.csv rotcodec 6 opus 6

Prints per metric the mean difference +- its 95% half-width (normal approximation) and how many files A
scores better on (higher PESQ-WB / STOI / SI-SDR, lower distances and errors).
"""

import csv
import sys

import numpy as np

HIGHER_IS_BETTER = {"pesq_wb": True, "stoi": True, "si_sdr": True, "mel_distance": False, "mrstft": False}


def rows(path: str, codec: str, setting: str) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {r["file"]: r for r in csv.DictReader(f) if r["codec"] == codec and r["setting"] == setting}


def main() -> None:
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    path, codec_a, setting_a, codec_b, setting_b = sys.argv[1:]
    a, b = rows(path, codec_a, setting_a), rows(path, codec_b, setting_b)
    files = sorted(a.keys() & b.keys())
    if not files:
        sys.exit(f"error: no file has both {codec_a} {setting_a} and {codec_b} {setting_b} in {path}")
    print(f"{codec_a} {setting_a} - {codec_b} {setting_b}, {len(files)} files")
    for metric, higher in HIGHER_IS_BETTER.items():
        d = np.array([float(a[f][metric]) - float(b[f][metric]) for f in files])
        half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
        better = int(((d > 0) if higher else (d < 0)).sum())
        print(f"  {metric}: {d.mean():+.3f} +- {half:.3f} ({codec_a} better on {better} of {d.size})")


if __name__ == "__main__":
    main()
