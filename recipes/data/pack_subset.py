"""Pack a size-capped training subset of a manifest into one folder: 16-bit FLAC at one sample rate, plus a
manifest with relative paths, so it can travel with the repository (a GPU lease copies at most 64 MiB).

usage: python recipes/data/pack_subset.py MANIFEST.tsv OUT_DIR [--max-mb 40] [--sample-rate 16000]
           [--valid-files 10] [--seed 0] [--opus-kbps K] [--excerpt-seconds S]

`--opus-kbps K` writes the training files as Ogg Opus at K kbps (needs `opusenc`, Debian's opus-tools) instead
of FLAC: about 3x more speech in the same megabytes at 36 kbps, where wideband Opus is near-transparent for
speech, far above what a codec at 1.5-12 kbps reproduces. Validation files stay FLAC.

`--excerpt-seconds S` packs an S-second excerpt of each file (from a seeded random offset) instead of the whole
file: for long music tracks, the budget then covers many pieces rather than a few whole ones.

The budget is approximate (source sizes estimate the packed ones; a speaker stops at the first file past its
share). Every training speaker keeps a share: speakers smaller than an equal share of the budget go in whole, and what
is left is split equally between the large ones (files drawn at random). `--valid-files` validation files
(the shortest first, so they cost little) are packed too. Prints the minutes and megabytes packed per split.
The subset is built outside the repository's tracked files: add OUT_DIR to `.git/info/exclude`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import soundfile as sf

from rotcodec.audio import AudioError
from rotcodec.data.manifest import Entry, ManifestError, read_manifest
from rotcodec.eval.baselines import EncoderFailedError, run_tool
from rotcodec.eval.runner import load_reference


def pack(
    entry: Entry,
    out: Path,
    name: str,
    sample_rate: int,
    opus_kbps: float = 0.0,
    excerpt: float = 0.0,
    rng: random.Random | None = None,
) -> tuple[float, int]:
    """Write one entry as mono `out/name`: 16-bit FLAC, or Ogg Opus at `opus_kbps` when > 0; only an `excerpt`-
    second stretch of it from a random offset (`rng`) when `excerpt` > 0. Returns (seconds, bytes)."""
    x = load_reference(entry.path, sample_rate, 1)[0]
    if excerpt > 0 and x.size > excerpt * sample_rate:
        n = int(excerpt * sample_rate)
        start = (rng or random.Random(0)).randrange(x.size - n + 1)
        x = x[start : start + n]
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if opus_kbps > 0:
        wav = path.with_suffix(".tmp.wav")
        sf.write(wav, x, sample_rate, subtype="PCM_16")
        try:
            run_tool(["opusenc", "--quiet", "--bitrate", f"{opus_kbps:g}", wav.name, path.name], path.parent)
        finally:
            wav.unlink()
    else:
        sf.write(path, x, sample_rate, subtype="PCM_16", format="FLAC")
    return x.size / sample_rate, path.stat().st_size


def source_bytes(entry: Entry, opus_kbps: float = 0.0, excerpt: float = 0.0) -> float:
    """Estimated packed size: the source file's bytes for FLAC, duration x bitrate (+5% container) for Opus;
    scaled to the excerpt's share of the file when `excerpt` > 0."""
    duration = entry.duration or 0.0
    share = min(1.0, excerpt / duration) if excerpt > 0 and duration > 0 else 1.0
    if opus_kbps > 0:
        return duration * share * opus_kbps * 1000 / 8 * 1.05
    try:
        return Path(entry.path).stat().st_size * share
    except OSError:  # unreadable files are skipped (with a message) when packed
        return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("out")
    p.add_argument("--max-mb", type=float, default=40.0, help="budget for the training files (MB)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--valid-files", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opus-kbps", type=float, default=0.0, help="training files as Ogg Opus at this bitrate")
    p.add_argument("--excerpt-seconds", type=float, default=0.0, help="pack this long an excerpt of each file")
    args = p.parse_args()
    if args.opus_kbps > 0 and shutil.which("opusenc") is None:
        sys.exit("error: --opus-kbps needs opusenc (Debian package opus-tools)")
    dest = Path(args.out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        sys.exit(f"error: {dest} exists and is not an empty folder")
    try:
        entries = read_manifest(args.manifest)
    except ManifestError as exc:
        sys.exit(f"error: {exc}")
    speakers: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.split == "train":
            speakers[e.speaker or e.path].append(e)
    valid = sorted((e for e in entries if e.split == "valid"), key=lambda e: e.duration)[: args.valid_files]
    if not speakers:
        sys.exit(f"error: {args.manifest} has no entries with split 'train'")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the destination and renamed into place: a failed run leaves no half-packed folder.
    out = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        total = pack_all(speakers, valid, out, args)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if total["train"][0] == 0:
        shutil.rmtree(out, ignore_errors=True)
        sys.exit("error: no training file could be packed (see the messages above)")
    if dest.exists():
        dest.rmdir()
    out.rename(dest)
    for split, (secs, size) in total.items():
        print(f"{split}: {secs / 60:.1f} min, {size / 1e6:.1f} MB")


def pack_all(
    speakers: dict[str, list[Entry]], valid: list[Entry], out: Path, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Pack the subset into `out` (files and manifest.tsv); returns {split: [seconds, bytes]}."""
    rng = random.Random(args.seed)
    rows: list[tuple[str, float, str, str]] = []
    total = {"train": [0.0, 0], "valid": [0.0, 0]}

    def add(e: Entry, split: str, speaker: str) -> int:
        opus = args.opus_kbps if split == "train" else 0.0
        name = f"{split}/{len(rows):05d}.{'opus' if opus else 'flac'}"
        try:
            secs, size = pack(e, out, name, args.sample_rate, opus, args.excerpt_seconds, rng)
        except (AudioError, EncoderFailedError) as exc:  # opusenc's error is already one line
            print(f"skipped {e.path}: {exc}", file=sys.stderr)
            return 0
        rows.append((name, secs, split, speaker))
        total[split][0] += secs
        total[split][1] += size
        return size

    budget = args.max_mb * 1e6
    # Water-filling on the estimated packed size of each speaker.
    est = {s: sum(source_bytes(e, args.opus_kbps, args.excerpt_seconds) for e in es) for s, es in speakers.items()}
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
    return total


if __name__ == "__main__":
    main()
