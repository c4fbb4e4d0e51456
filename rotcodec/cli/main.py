"""`rotcodec` entry point: builds the argument parser from the subcommand modules and runs one.

Exit codes: 0 success; 1 bad input or runtime error (one line on stderr, e.g. a missing or corrupt file);
2 usage error (unknown option, conflicting options); 130 interrupted (Ctrl-C or SIGTERM).

A subcommand module provides `register(subparsers)` (see rotcodec/cli/__init__.py). To add one, append its
module name to SUBCOMMAND_MODULES; modules not present in this installation are skipped.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from . import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, UsageError

SUBCOMMAND_MODULES = (
    "rotcodec.cli.compress",
    "rotcodec.cli.train",
    "rotcodec.cli.evaluate",
    "rotcodec.cli.prepare",
    "rotcodec.cli.detect",
    "rotcodec.train.export",
    "rotcodec.train.requantize",
    "rotcodec.eval.compare",
)

EPILOG = """exit codes:
  0    success
  1    bad input or runtime error (one-line message on stderr; outputs are left untouched)
  2    usage error (unknown or conflicting options)
  130  interrupted (Ctrl-C or SIGTERM; partial outputs are removed)

Run 'rotcodec COMMAND --help' for a command's options."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="rotcodec",
        description="Neural audio compression with rotation-trick residual vector quantization.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rotcodec {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that subcommand is not part of this installation
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from ..outputs import terminate_as_interrupt
    from ..runtime import keep_freed_memory

    keep_freed_memory()  # faster coding on glibc (rotcodec/runtime.py)
    try:
        with terminate_as_interrupt():  # SIGTERM cleans up like Ctrl-C in every command
            return int(func(args) or 0)
    except UsageError as exc:
        print(f"rotcodec {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as exc:
        if _raised_by_interrupt(exc):
            print("rotcodec: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"rotcodec {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("rotcodec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _raised_by_interrupt(exc: BaseException) -> bool:
    """Whether `exc` was raised while a Ctrl-C or SIGTERM was being handled (a clean-up that failed on the way
    out): the run was interrupted, not given bad input."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
