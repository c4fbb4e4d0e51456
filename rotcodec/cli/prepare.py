"""`rotcodec prepare SRC... -o manifest.tsv`: deterministic train/valid/test manifests (rotcodec.data.manifest)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..data.manifest import add_prepare_arguments, run_prepare

    p = subparsers.add_parser(
        "prepare",
        help="build a train/valid/test manifest from folders of audio",
        description="Scan audio and write a split manifest.",
    )
    add_prepare_arguments(p)
    p.set_defaults(func=run_prepare)
