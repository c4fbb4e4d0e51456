"""Atomic file outputs shared by every writer in the package.

A file is written under a hidden temporary name beside its target (`.NAME.XXXXXXXX.tmp`) and published only
when complete, readable as the umask allows (mkstemp alone makes 0600 files). Without `force` the final name
is created exclusively (`os.link`), so of several writers racing for one new path exactly one succeeds and the
others get `OutputExistsError`; with `force` it is replaced (`os.replace`). On any exception, Ctrl-C or a
SIGTERM turned into one by `terminate_as_interrupt`, the temporary file is removed. A SIGKILL cannot be
caught: it may leave a `.NAME.*.tmp` file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


class OutputError(ValueError):
    """An output that cannot be written (folder missing or not writable, would overwrite the input)."""


class OutputExistsError(OutputError):
    """The output file exists and overwriting was not asked for."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same cleanup runs (the CLI exits 130)."""


_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The permission bits a new file gets from open(): 0o666 less the process umask."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _exists_error(path: Path) -> OutputExistsError:
    return OutputExistsError(f"{path}: already exists (use --force to overwrite)")


def publish(tmp: str | os.PathLike, path: str | os.PathLike, force: bool = False) -> None:
    """Give the finished temporary file `tmp` normal permissions and move it to `path`: replacing an existing
    file only with `force`, otherwise creating `path` exclusively (OutputExistsError if it appeared meanwhile).
    `tmp` is gone afterwards either way."""
    path = Path(path)
    try:
        os.chmod(tmp, file_mode())
        if force:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # fails if the name exists: concurrent writers cannot both win
        except FileExistsError:
            raise _exists_error(path) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # no hard links on this filesystem: claim the name with an exclusive create, then replace it
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                raise _exists_error(path) from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = True) -> Iterator[str]:
    """A temporary path beside `path` (an empty file already created) that becomes `path` if the block succeeds
    (`publish`); removed otherwise. For writers that want a file name rather than a file object."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write to folder {path.parent} ({exc.strerror})") from None
    try:  # from here on a Ctrl-C or SIGTERM removes the temporary file
        os.close(fd)
        yield tmp
        publish(tmp, path, force)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike, mode: str = "wb", force: bool = True, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """An open temporary file (`mode`: "wb", "w+b" or "w") that becomes `path` if the block succeeds."""
    if mode not in ("wb", "w+b", "w"):
        raise ValueError(f"atomic_file mode must be 'wb', 'w+b' or 'w', got {mode!r}")
    with atomic_path(path, force) as tmp:
        kwargs = {"encoding": encoding or "utf-8", "newline": ""} if mode == "w" else {}
        with open(tmp, mode, **kwargs) as f:
            yield f


def write_bytes(path: str | os.PathLike, data: bytes, force: bool = True) -> None:
    """Write `data` to `path` atomically."""
    with atomic_file(path, "wb", force) as f:
        f.write(data)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"terminated by signal {signum}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread, so partial outputs are
    cleaned up as on Ctrl-C. A no-op outside the main thread (signal handlers can only be set there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
