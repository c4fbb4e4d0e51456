"""The `rotcodec` command line (entry point: `rotcodec.cli.main:main`).

Each subcommand module defines `register(subparsers)`, which adds its parser(s) and sets `func` (a callable
taking the parsed namespace and returning an exit code); `rotcodec.cli.main.SUBCOMMAND_MODULES` lists the
modules. Modules import heavy dependencies (torch, models) inside `func`, so `rotcodec --help` stays fast.

Exit codes: 0 success; 1 bad input or runtime error (the message names the file); 2 usage error (bad or
conflicting options); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Options that cannot work together; reported like an argparse error, exit code 2."""


def _thread_count(text: str) -> int:
    import argparse

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
        type=_thread_count,
        default=1,
        metavar="N",
        help="CPU threads (default 1: fastest on a busy machine, same bytes everywhere; 2+ helps an idle one)",
    )


def use_threads(count: int) -> None:
    """Set torch's intra-op CPU threads."""
    import torch

    torch.set_num_threads(count)


__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "add_threads_option",
    "use_threads",
]
