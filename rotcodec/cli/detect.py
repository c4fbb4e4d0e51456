"""`rotcodec detect FILE...`: which model `compress` would pick for each file (speech or music), and
`rotcodec detect --fit --speech SRC... --music SRC... -o content.json`: refit that rule (inference/content.py)."""

from __future__ import annotations

import argparse
import sys

from ..pretrained import CHOOSE_MODEL_HINT, MODEL_FOR
from . import EXIT_ERROR, EXIT_OK, HelpFormatter, UsageError, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help="say whether files are speech or music (the model compress picks without --model)",
        description="Classify each file's first 20 s as speech or music with the bundled rule "
        "(rotcodec/pretrained/content.json), or refit that rule with --fit.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="*", help="audio files to classify")
    p.add_argument("--fit", action="store_true", help="fit the rule on --speech and --music instead")
    p.add_argument("--speech", nargs="+", default=[], metavar="SRC", help="speech folders, files or manifests")
    p.add_argument("--music", nargs="+", default=[], metavar="SRC", help="music folders, files or manifests")
    p.add_argument("--clips", type=positive_int, default=600, help="training crops per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops")
    p.add_argument("-o", "--output", help="JSON file the fitted rule is written to (with --fit)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output")
    p.set_defaults(func=run_detect)


def run_detect(args: argparse.Namespace) -> int:
    if args.fit:
        if not (args.speech and args.music and args.output) or args.inputs:
            raise UsageError("--fit needs --speech, --music and -o, and no input files")
        return _fit(args)
    if not args.inputs:
        raise UsageError("give audio files to classify, or --fit")
    from ..audio import AudioError
    from ..inference.content import SECONDS, ContentClassifier, ContentUncertain
    from ..inference.files import open_audio

    rule = ContentClassifier.load()
    failed = False
    for src in args.inputs:
        try:
            with open_audio(src) as source:
                head = source.head(int(SECONDS * source.sr))
            kind, p = rule.classify(head, source.sr)
            print(f"{src}: {kind} (P(music) {p:.2f}) -> {MODEL_FOR[kind]}")
        except ContentUncertain as exc:
            print(f"{src}: {exc}: compress needs {CHOOSE_MODEL_HINT}")
        except (AudioError, OSError) as exc:
            failed = True
            print(f"rotcodec detect: error: {exc}", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def _fit(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    import numpy as np

    from ..data.manifest import find_audio, probe
    from ..inference.content import clip_features, file_features, fit
    from ..outputs import write_bytes

    if Path(args.output).exists() and not args.force:
        raise UsageError(f"{args.output} exists: pass --force to overwrite it")

    def split(sources: list[str]) -> tuple[dict[str, list[str]], list[str]]:
        with warnings.catch_warnings():  # unreadable files are counted below instead
            warnings.simplefilter("ignore")
            entries, skipped = probe(find_audio(sources))
        if skipped:
            print(f"rotcodec detect: note: skipped {len(skipped)} unreadable file(s), e.g. {skipped[0][0]}")
        train: dict[str, list[str]] = {}
        for e in entries:
            if e.split in (None, "train"):
                train.setdefault(e.speaker or str(Path(e.path).parent), []).append(e.path)
        held = [e.path for e in entries if e.split in ("valid", "test")]
        if not train:
            raise UsageError(f"no training files in {' '.join(sources)}")
        return train, held

    (sp_train, sp_held), (mu_train, mu_held) = split(args.speech), split(args.music)
    rule = fit(clip_features(sp_train, args.clips, args.seed), clip_features(mu_train, args.clips, args.seed + 1))
    rule.trained_on = (
        f"{args.clips} crops (1-20 s) per class, each speaker or folder weighing the same, from the training "
        f"splits of {sum(map(len, sp_train.values()))} speech files in {len(sp_train)} groups "
        f"({' '.join(args.speech)}) and {sum(map(len, mu_train.values()))} music files in {len(mu_train)} groups "
        f"({' '.join(args.music)}), seed {args.seed}"
    )
    lines = []
    for name, paths, want in (("speech", sp_held, "speech"), ("music", mu_held, "music")):
        if not paths:
            continue
        p = np.array([rule.p_music(f) for f in file_features(paths)])
        right = (p >= rule.music_above) if want == "music" else (p <= rule.speech_below)
        wrong = (p <= rule.speech_below) if want == "music" else (p >= rule.music_above)
        undecided = len(p) - right.sum() - wrong.sum()
        lines.append(f"{name}: {right.sum()} of {len(p)} right, {wrong.sum()} wrong, {undecided} undecided")
    rule.held_out = "first 20 s of the valid/test files: " + "; ".join(lines)
    write_bytes(args.output, rule.to_json().encode(), force=args.force)
    print(f"wrote {args.output}: {rule.held_out}")
    return EXIT_OK
