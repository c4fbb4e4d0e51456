#!/usr/bin/env python3
"""Write a speech manifest over the development corpus in ../shared/data/speech (plus extra folders).

Usage:
    python recipes/data/build_shared_speech.py OUT_MANIFEST [--shared DIR] [--extra DIR ...] [--force]
    e.g. python recipes/data/build_shared_speech.py /work/corpus/speech_manifest.tsv \
             --extra /work/corpus/asterisk_en

Debian packages needed: python3 (>= 3.11) only; the Python side needs rotcodec's own dependencies
(soundfile, which bundles libsndfile). Splits are by speaker: a fixed set of tortoise-voices speakers and
CMU ARCTIC are held out as the test split; of the rest, ~10% of speakers (hashed, seed 0) go to valid.
tortoise-voices recordings are for research use only: never copy them into samples/ or a release.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

try:
    from rotcodec.data.manifest import ManifestError, prepare_manifest
except ImportError as exc:  # pragma: no cover - environment problem, explained to the user
    sys.exit(f"build_shared_speech: cannot import rotcodec ({exc}); pip install -e {REPO}")

# Speaker = first matching group; anything unmatched uses its parent folder (librivox, arctic, misc).
SPEAKER_REGEX = (
    r"tortoise-voices/(.+?)_[a-z]*\d+\.\w+$"  # angie_3.flac -> angie, pat2_00100 -> pat2
    r"|/[a-z]{2}/([a-z]{2}_[A-Z]{2}_[fm]_[A-Za-z]+)/"  # asterisk corpus: <lang>/<voice>/...
)
HOLD_OUT = ["arctic", "emma", "halle", "freeman", "william", "train_dotrice"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="manifest to write (.tsv/.csv/.jsonl)")
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data" / "speech"))
    ap.add_argument("--extra", nargs="*", default=[], help="more folders (e.g. the asterisk corpus)")
    ap.add_argument("--valid-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    if not shared.is_dir():
        print(f"build_shared_speech: {shared} not found (pass --shared DIR)", file=sys.stderr)
        return 1
    sources = [str(p) for p in sorted(shared.iterdir()) if p.is_dir()] + list(args.extra)
    try:
        report = prepare_manifest(
            sources,
            args.out,
            valid_fraction=args.valid_fraction,
            test_fraction=0.0,
            split_by="speaker",
            speaker_regex=SPEAKER_REGEX,
            seed=args.seed,
            hold_out_speakers=HOLD_OUT,
            force=args.force,
        )
    except ManifestError as exc:
        print(f"build_shared_speech: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
