"""Pack a size-capped training subset of a manifest into one folder: 16-bit FLAC at one sample rate, plus a
manifest with relative paths, so it can travel with the repository (a GPU lease copies at most 64 MiB).

usage: python recipes/data/pack_subset.py MANIFEST.tsv OUT_DIR [--max-mb 40] [--sample-rate 16000]
           [--valid-files 10] [--seed 0]

The budget is approximate (source sizes estimate the packed ones; a speaker stops at the first file past its
share). Every training speaker keeps a share: speakers smaller than an equal share of the budget go in whole, and what
is left is split equally between the large ones (files drawn at random). `--valid-files` validation files
(the shortest first, so they cost little) are packed too. Prints the minutes and megabytes packed per split.
The subset is built outside the repository's tracked files: add OUT_DIR to `.git/info/exclude`.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from pathlib import Path

import soundfile as sf

from rotcodec.audio import AudioError, load_audio, resample
from rotcodec.data.manifest import Entry, read_manifest


def pack(entry: Entry, out: Path, name: str, sample_rate: int) -> tuple[float, int]:
    """Write one entry as mono FLAC `out/name`; returns (seconds, bytes)."""
    x, sr = load_audio(entry.path)
    x = resample(x.mean(axis=0, keepdims=True), sr, sample_rate)[0]
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sample_rate, subtype="PCM_16", format="FLAC")
    return x.size / sample_rate, path.stat().st_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("out")
    p.add_argument("--max-mb", type=float, default=40.0, help="budget for the training files (MB)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--valid-files", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out} is not empty")
    entries = read_manifest(args.manifest)
    rng = random.Random(args.seed)
    speakers: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.split == "train":
            speakers[e.speaker or e.path].append(e)
    valid = sorted((e for e in entries if e.split == "valid"), key=lambda e: e.duration)[: args.valid_files]
    if not speakers:
        sys.exit(f"error: {args.manifest} has no entries with split 'train'")
    rows: list[tuple[str, float, str, str]] = []
    total = {"train": [0.0, 0], "valid": [0.0, 0]}

    def add(e: Entry, split: str, speaker: str) -> int:
        name = f"{split}/{len(rows):05d}.flac"
        try:
            secs, size = pack(e, out, name, args.sample_rate)
        except AudioError as exc:
            print(f"skipped {e.path}: {exc}", file=sys.stderr)
            return 0
        rows.append((name, secs, split, speaker))
        total[split][0] += secs
        total[split][1] += size
        return size

    budget = args.max_mb * 1e6
    # Water-filling on the FLAC-size estimate of each speaker (bytes on disk of the source files).
    est = {s: sum(Path(e.path).stat().st_size for e in es) for s, es in speakers.items()}
    small = {s for s in speakers if est[s] <= budget / len(speakers)}
    for s in sorted(small):
        for e in speakers[s]:
            budget -= add(e, "train", s)
    large = sorted(set(speakers) - small)
    for s in large:
        share, used = budget / len(large), 0
        files = speakers[s][:]
        rng.shuffle(files)
        for e in files:
            if used >= share:
                break
            used += add(e, "train", s)
    for e in valid:
        add(e, "valid", e.speaker or e.path)
    with open(out / "manifest.tsv", "w") as f:
        f.write("path\tduration\tsample_rate\tchannels\tsplit\tspeaker\n")
        for name, secs, split, speaker in rows:
            f.write(f"{name}\t{secs:.4f}\t{args.sample_rate}\t1\t{split}\t{speaker}\n")
    for split, (secs, size) in total.items():
        print(f"{split}: {secs / 60:.1f} min, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
