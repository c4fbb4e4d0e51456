"""The `rotcodec` command line (entry point: `rotcodec.cli.main:main`).

Each subcommand module defines `register(subparsers)`, which adds its parser(s) and sets `func` (a callable
taking the parsed namespace and returning an exit code); `rotcodec.cli.main.SUBCOMMAND_MODULES` lists the
modules. Modules import heavy dependencies (torch, models) inside `func`, so `rotcodec --help` stays fast.

Exit codes: 0 success; 1 bad input or runtime error (the message names the file); 2 usage error (bad or
conflicting options); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import math

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Options that cannot work together; reported like an argparse error, exit code 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Help that states each option's default: pass `formatter_class=HelpFormatter` to `add_parser`.

    " (default: X)" is appended to an option's help unless the
    text already mentions a default, or there is nothing worth saying: no default (None), an on/off flag,
    an empty list or string, or a required positional argument."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or (isinstance(default, (str, list, tuple)) and not default)
            or (not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"  # help strings are %-formatted later


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (`--kbps 6`), with a readable message otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (`--n-q 4`), with a readable message otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def add_threads_option(p) -> None:  # noqa: ANN001
    """`--threads N` (default 1): torch's CPU threads for the command."""
    # One thread: a 64 s file compressed in 10-14 s on a 2-core machine kept busy by two other processes, against
    # 14-37 s with 2 threads; idle, 2 threads were about 1.3x faster (6.3 s vs 8.2 s). Codes can differ in the
    # last bits of float sums between thread counts, so one default also keeps the bytes the same everywhere.
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="CPU threads (default 1: fastest on a busy machine, same bytes everywhere; 2+ helps an idle one)",
    )


def use_threads(count: int) -> None:
    """Set torch's intra-op CPU threads."""
    import torch  # here, not at the top: `rotcodec --help` must not pay for torch

    torch.set_num_threads(count)


__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "HelpFormatter",
    "UsageError",
    "add_threads_option",
    "positive_float",
    "positive_int",
    "use_threads",
]
