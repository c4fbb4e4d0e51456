"""`rotcodec train RECIPE.yaml [--set key=value ...] [--run-dir DIR] [--resume] [--init MODEL]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        formatter_class=HelpFormatter,
        help="train a codec from a YAML recipe",
        description="Train a codec from a YAML recipe. Multi-GPU: torchrun --nproc-per-node N -m rotcodec train ...",
    )
    p.add_argument("recipe", help="recipe YAML (e.g. recipes/speech16k.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set train.steps=200 (repeatable)",
    )
    p.add_argument("--run-dir", help="output folder (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--init", metavar="MODEL", help="start from this model file's weights (fine-tuning)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.loop import TrainingError, train
    from ..train.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    run_dir = Path(args.run_dir or Path("runs") / recipe.name)
    try:
        last = train(recipe, run_dir, resume=args.resume, init=args.init, quiet=args.quiet)
    except TrainingError as exc:  # a RuntimeError, which main() would show as a traceback
        raise ValueError(str(exc)) from None
    if last.get("finished"):
        print(
            f"{run_dir} is already finished at step {last['step']} (train.steps={last['train.steps']}): "
            "nothing to do; raise train.steps with --set to train further"
        )
    elif last:
        print(f"step {last.get('step')}: loss {last.get('loss/total', float('nan')):.4f}, run folder {run_dir}")
    return 0
