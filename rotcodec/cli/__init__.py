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


__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError"]
