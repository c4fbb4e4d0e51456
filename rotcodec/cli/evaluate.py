"""`rotcodec eval` (quality versus bitrate against Opus/Codec2/MP3) and `rotcodec ablate` (matched runs)."""

from __future__ import annotations

import argparse
import sys

from . import HelpFormatter, add_threads_option, positive_float, positive_int, use_threads


def _sets(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value for every run, e.g. --set train.steps=200 (repeatable)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a model and classic codecs at several bitrates",
        description="Encode/decode every file with the model (real .rcq bitstream) and baselines, score "
        "SI-SDR, mel, MR-STFT, PESQ-WB, STOI; write results.csv, summary.md, quality_vs_bitrate.png.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model",
        help="rotcodec model: a name from `rotcodec models`, or a file path such as ./NAME or "
        "DIR/NAME.safetensors (default: speech16k; with --music, music24k)",
    )
    p.add_argument("--no-model", action="store_true", help="score only the --baselines, no rotcodec model")
    p.add_argument("--data", required=True, help="folder, glob, audio file or manifest (.tsv/.csv/.jsonl)")
    p.add_argument("--kbps", type=positive_float, nargs="+", help="model bitrates (default: 1.5 3 6 12)")
    p.add_argument("--n-q", type=positive_int, nargs="+", help="model stage counts instead of --kbps")
    p.add_argument(
        "--stage-sweep",
        action="store_true",
        help="the model at every stage count 1..N instead of --kbps (or at those of --n-q); settings are "
        "labelled nqN plus the side rows sent, e.g. nq3+pitch+env",
    )
    p.add_argument(
        "--envelope",
        choices=["on", "off", "both"],
        help="stage counts and ceiling with the envelope rows (on, the default), without them (off) or both; "
        "for models with envelope rows",
    )
    p.add_argument(
        "--envelope-tier",
        type=int,
        nargs="+",
        dest="envelope_tiers",
        metavar="T",
        help="stage counts with these envelope tiers' band gains instead of --envelope (0: the trained tier; "
        "models list theirs in model.envelope_tiers), labelled nqN+pitch+envT",
    )
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="also decode the encoder's continuous latent (quantizer bypassed; setting 'ceiling', no kbps) "
        "and add the quantizer-versus-decoder diagnosis to summary.md",
    )
    p.add_argument("--baselines", nargs="*", default=[], help="classic codecs: opus codec2 mp3")
    p.add_argument(
        "--baseline-kbps", nargs="*", default=[], metavar="NAME=K,K", help="e.g. opus=6,8,12 codec2=3.2,1.6 mp3=8,16"
    )
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--max-files", type=positive_int, help="evaluate at most this many files")
    p.add_argument("--split", choices=["train", "valid", "test"], help="only this split of a --data manifest")
    add_threads_option(p)
    p.add_argument("--max-seconds", type=positive_float, help="cut every file to this many seconds")
    p.add_argument("--music", action="store_true", help="not speech: skip PESQ and STOI")
    p.add_argument("--dnsmos", action="store_true", help="also DNSMOS (optional `speechmos` package)")
    p.add_argument("--sample-rate", type=positive_int, default=16000, help="evaluation rate (Hz) with --no-model")
    p.add_argument("--name", default="rotcodec", help="codec label of the model in the tables")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval_cmd)

    a = subparsers.add_parser(
        "ablate",
        help="matched training runs: rotation trick vs STE (and sweeps)",
        description="Train matched runs of one recipe that differ only in the quantizer estimator/wiring "
        "(and --sweep values), evaluate each, write ablation.md, ablation.csv, curves.png, per_stage_usage.png.",
        formatter_class=HelpFormatter,
    )
    a.add_argument("recipe", help="recipe YAML, e.g. recipes/ablation_rotation_vs_ste.yaml")
    a.add_argument("--out", required=True, help="output folder (finished runs are not retrained)")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values")
    a.add_argument(
        "--variants",
        nargs="+",
        default=["rotation-detached", "rotation-chained", "ste"],
        help="quantizer variants: rotation-detached rotation-chained ste ste-detached ste-chained",
    )
    a.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2", help="also sweep a recipe key")
    _sets(a)
    a.add_argument("--eval-data", help="evaluate on these files instead of the recipe's validation data")
    a.add_argument("--kbps", type=positive_float, nargs="+", help="evaluate at these bitrates (default: n_q = 1..N)")
    a.add_argument("--max-files", type=positive_int, default=16, help="evaluation files per run")
    a.add_argument("--max-seconds", type=positive_float, default=4.0, help="cut evaluation files to this many seconds")
    a.add_argument("--music", action="store_true", help="not speech: skip PESQ and STOI")
    a.add_argument("--init", metavar="MODEL", help="every run starts from this model file (see train.init_fresh)")
    a.add_argument(
        "--export-seconds",
        type=positive_float,
        default=0.0,
        metavar="S",
        help="evaluate each run as exported, with code tables from S seconds of its training data (for --kbps)",
    )
    a.add_argument("--train-only", action="store_true", help="train the runs, evaluate and report nothing")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads for training and evaluation (sets train.threads in every run; default: the recipe's)",
    )
    a.set_defaults(func=run_ablate_cmd)


def _fail(exc: BaseException) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _check_eval_args(args: argparse.Namespace) -> None:
    """Option combinations that cannot work: a one-line UsageError (exit 2) before any work."""
    from . import UsageError

    stages = args.n_q is not None or args.stage_sweep
    if args.kbps is not None and stages:
        raise UsageError("--kbps cannot be combined with --n-q or --stage-sweep (they choose the settings)")
    if args.no_model and args.model is not None:
        raise UsageError("--model and --no-model contradict each other")
    model_flags = (("--kbps", args.kbps), ("--n-q", args.n_q), ("--stage-sweep", args.stage_sweep))
    for flag, value in (*model_flags, ("--ceiling", args.ceiling)):
        if value and args.no_model:
            raise UsageError(f"{flag} needs a model (drop --no-model; baselines take --baseline-kbps)")
    if args.no_model and not args.baselines:
        raise UsageError("--no-model needs --baselines: there is nothing else to evaluate")
    if args.envelope_tiers is not None and (args.envelope is not None or not stages):
        raise UsageError("--envelope-tier applies to --stage-sweep and --n-q, instead of --envelope")
    if args.envelope is not None and not (stages or args.ceiling):
        raise UsageError("--envelope applies to --stage-sweep, --n-q and --ceiling; with --kbps the rate decides")


def run_eval_cmd(args: argparse.Namespace) -> int:
    from ..eval.baselines import MissingEncoderError
    from ..eval.runner import DEFAULT_KBPS, EvalError, EvalOptions, parse_baseline_kbps, run_eval
    from ..pretrained import DEFAULT_MODEL, MODEL_FOR

    _check_eval_args(args)
    use_threads(args.threads)
    try:
        opts = EvalOptions(
            model=None if args.no_model else (args.model or (MODEL_FOR["music"] if args.music else DEFAULT_MODEL)),
            data=args.data,
            out=args.out,
            kbps=DEFAULT_KBPS if args.kbps is None else args.kbps,
            n_q=args.n_q,
            stage_sweep=args.stage_sweep,
            envelope=args.envelope or "on",
            envelope_tiers=args.envelope_tiers,
            ceiling=args.ceiling,
            baselines=args.baselines,
            baseline_kbps=parse_baseline_kbps(args.baseline_kbps),
            max_files=args.max_files,
            split=args.split,
            max_seconds=args.max_seconds,
            speech=not args.music,
            dnsmos=args.dnsmos,
            name=args.name,
            quiet=args.quiet,
            sample_rate=args.sample_rate,
        )
        outcome = run_eval(opts)
    except (EvalError, MissingEncoderError) as exc:
        return _fail(exc)
    print(f"{outcome.computed} new row(s), {len(outcome.rows)} in {outcome.out / 'results.csv'}; see summary.md")
    return 0


def run_ablate_cmd(args: argparse.Namespace) -> int:
    from ..eval.ablate import AblationError, AblationOptions, run_ablation

    try:
        opts = AblationOptions(
            recipe=args.recipe,
            out=args.out,
            seeds=args.seeds,
            variants=args.variants,
            overrides=args.overrides + ([f"train.threads={args.threads}"] if args.threads else []),
            sweeps=args.sweep,
            eval_data=args.eval_data,
            kbps=args.kbps,
            max_files=args.max_files,
            max_seconds=args.max_seconds,
            speech=not args.music,
            quiet=args.quiet,
            init=args.init,
            export_seconds=args.export_seconds,
            train_only=args.train_only,
        )
        result = run_ablation(opts)
    except AblationError as exc:
        return _fail(exc)
    report = (
        "evaluation left for a call without --train-only" if args.train_only else f"see {result.out / 'ablation.md'}"
    )
    print(f"{len(result.runs)} run(s) ({result.trained} trained now); {report}")
    return 0
