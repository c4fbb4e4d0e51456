"""`rotcodec prepare SRC... -o manifest.tsv`: deterministic train/valid/test manifests (rotcodec.data.manifest)."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..audio import AudioError
from ..data.manifest import ManifestError, prepare_manifest
from . import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="build a train/valid/test manifest from folders of audio",
        description="Scan audio and write a split manifest.",
        formatter_class=HelpFormatter,
    )
    add_prepare_arguments(p)
    p.set_defaults(func=run_prepare)


def add_prepare_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of `rotcodec prepare`."""
    ap.add_argument("sources", nargs="+", help="folders, globs, audio files or manifests (.tsv/.csv/.jsonl)")
    ap.add_argument("-o", "--output", required=True, help="manifest to write (.tsv, .csv or .jsonl)")
    ap.add_argument("--valid-fraction", type=float, default=0.05, help="share of speakers (or files) for validation")
    ap.add_argument("--test-fraction", type=float, default=0.05, help="share of speakers (or files) for testing")
    ap.add_argument(
        "--split-by", choices=("speaker", "file"), default="speaker", help="unit kept whole within one split"
    )
    ap.add_argument(
        "--speaker-regex",
        default=None,
        help="regex searched in each absolute path; its first group is the speaker (default: parent folder)",
    )
    ap.add_argument("--hold-out-speakers", default="", help="comma-separated speakers forced into the test split")
    ap.add_argument("--seed", type=int, default=0, help="seed of the deterministic split")
    ap.add_argument("--force", action="store_true", help="overwrite an existing manifest")


def run_prepare(args: argparse.Namespace) -> int:
    """Run `rotcodec prepare` with parsed arguments; returns a process exit code."""
    held = [s.strip() for s in args.hold_out_speakers.split(",") if s.strip()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
            opts = dict(split_by=args.split_by, speaker_regex=args.speaker_regex, seed=args.seed, force=args.force)
            report = prepare_manifest(
                args.sources, args.output, args.valid_fraction, args.test_fraction, hold_out_speakers=held, **opts
            )
    except (ManifestError, AudioError) as exc:
        print(f"rotcodec prepare: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {report}")
    return 0
