"""Per-file paired differences (new - old) of two `rotcodec eval` results.csv files, rotcodec rows only.

python docs/results/default_model_step18000/paired.py docs/results/periodicity/results.csv \
    docs/results/default_model_step18000/results.csv

Prints, per bitrate and metric, the mean difference +- its 95% half-width (normal approximation) and how
many files got a larger value. Metrics missing from either file (older results) are skipped.
"""

import csv
import sys

import numpy as np

METRICS = ("pesq_wb", "stoi", "mel_distance", "mrstft", "periodicity_error", "pitch_error", "si_sdr")


def rows(path: str, setting: str) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {r["file"]: r for r in csv.DictReader(f) if r["codec"] == "rotcodec" and r["setting"] == setting}


def main() -> None:
    old_path, new_path = sys.argv[1:3]
    for setting in ("1.5", "3", "6", "12"):
        old, new = rows(old_path, setting), rows(new_path, setting)
        files = sorted(old.keys() & new.keys())
        parts = []
        for m in METRICS:
            if any(m not in table[f] for table in (old, new) for f in files):
                continue  # results from before the metric existed
            d = np.array([float(new[f][m]) - float(old[f][m]) for f in files])
            half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
            parts.append(f"{m} {d.mean():+.4f}±{half:.4f} ({(d > 0).sum()}/{len(d)} up)")
        print(f"{setting} kbps: " + "; ".join(parts))


if __name__ == "__main__":
    main()
