"""File plumbing for compress/decompress: open audio or `.rcq` inputs (paths or "-" for stdin), write
outputs atomically without overwriting, and report what was written."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from ..audio import (
    UNKNOWN_FRAMES,
    AudioError,
    check_finite,
    check_input_file,
    check_sample_rate,
    check_wav_complete,
    count_frames,
)
from ..bitstream import RcqHeader
from ..outputs import OutputError, OutputExistsError, atomic_file

Progress = Callable[[float], None]  # called with seconds of audio just processed


def kbps_of(size: float, seconds: float) -> float:
    """The rate in kbps of `size` bytes over `seconds` of audio."""
    return 8 * size / max(seconds, 1e-9) / 1000.0


@dataclass
class FileResult:
    """One compressed or decompressed file: the `.rcq` header, the output's size in bytes and, for compress, the
    rate its plan expected (kbps, header included; NaN for decompress)."""

    src: str
    dst: str
    header: RcqHeader
    size: int
    planned_kbps: float = float("nan")

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.header.num_samples / self.header.original_sample_rate

    @property
    def kbps(self) -> float:
        """Measured bitrate of the output file in kbps, header and chunk records included."""
        return kbps_of(self.size, self.duration)


_EXACT_LENGTH_FORMATS = {"WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64", "CAF", "AU"}


@dataclass
class AudioSource:
    """An open audio input: soundfile handle, display name, rate (Hz), channels and exact length."""

    handle: sf.SoundFile
    name: str
    sr: int
    channels: int
    frames: int

    def head(self, count: int) -> np.ndarray:
        """The first `count` samples `[channels, <= count]` (float32); `blocks` still starts from the beginning."""
        return self.excerpts([(0, count)])

    def excerpts(self, spans: list[tuple[int, int]]) -> np.ndarray:
        """The samples of each (start, count) span, joined: `[channels, total]` float32; `blocks` still starts
        from the beginning."""
        parts = []
        try:
            for start, count in spans:
                self.handle.seek(start)
                parts.append(self.handle.read(count, dtype="float32", always_2d=True))
        except (sf.LibsndfileError, RuntimeError) as exc:
            msg = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise AudioError(f"{self.name}: audio data unreadable ({msg})") from None
        data = np.concatenate(parts) if parts else np.zeros((0, self.channels), np.float32)
        check_finite(data, self.name)
        return np.ascontiguousarray(data.T)

    def blocks(self, block: int, progress: Progress | None = None) -> Iterator[np.ndarray]:
        """float32 blocks [channels, <= block] from the start; AudioError on NaN/Inf or a length change."""
        seen = 0
        while True:
            try:
                if seen == 0:
                    self.handle.seek(0)
                data = self.handle.read(block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                msg = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise AudioError(f"{self.name}: audio data unreadable after {seen} samples ({msg})") from None
            if not len(data):
                break
            check_finite(data, self.name)
            seen += len(data)
            if progress:
                progress(len(data) / self.sr)
            yield np.ascontiguousarray(data.T)
        if seen != self.frames:
            raise AudioError(f"{self.name}: read {seen} samples, the header promised {self.frames}")


def _spool_stdin() -> BinaryIO:
    """Copy stdin to a seekable temp file (memory until 32 MiB, then disk) so it can be read in blocks."""
    tmp = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    shutil.copyfileobj(sys.stdin.buffer, tmp, 1 << 20)
    tmp.seek(0)
    return tmp  # type: ignore[return-value]


@contextlib.contextmanager
def open_audio(src: str | os.PathLike) -> Iterator[AudioSource]:
    """Open an audio file (any format soundfile reads; "-" = stdin) for block reading."""
    if os.fspath(src) == "-":
        name, raw = "<stdin>", _spool_stdin()
        if not raw.read(1):
            raise AudioError("<stdin>: empty input")
        raw.seek(0)
    else:
        name, raw = os.fspath(src), check_input_file(src)
    check_wav_complete(raw, name)
    try:
        handle = sf.SoundFile(raw if not isinstance(raw, Path) else str(raw))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        msg = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise AudioError(f"{name}: not a readable audio file ({msg})") from None
    with handle:
        sr = check_sample_rate(handle.samplerate, f"{name}: sample rate")
        frames = handle.frames
        if handle.format not in _EXACT_LENGTH_FORMATS or frames >= UNKNOWN_FRAMES:
            frames = count_frames(handle, name)  # compressed formats may only estimate their length
        if frames <= 0:
            raise AudioError(f"{name}: contains no audio samples (zero length)")
        yield AudioSource(handle, name, sr, handle.channels, frames)


@contextlib.contextmanager
def open_rcq(src: str | os.PathLike | BinaryIO) -> Iterator[BinaryIO]:
    """Open an `.rcq` file ("-" = stdin) as a seekable binary file (open file objects pass through)."""
    if not isinstance(src, (str, os.PathLike)):
        yield src
        return
    if os.fspath(src) == "-":
        with _spool_stdin() as f:
            yield f
        return
    with open(check_input_file(src), "rb") as f:
        yield f


@contextlib.contextmanager
def atomic_output(
    dst: str | os.PathLike, force: bool = False, src: str | os.PathLike | None = None
) -> Iterator[BinaryIO]:
    """A writable binary file that becomes `dst` only if the block succeeds ("-": copied to stdout at the
    end). Refuses an existing `dst` unless `force` (also one that appears while writing), and never overwrites
    `src`."""
    if os.fspath(dst) == "-":
        with tempfile.TemporaryFile() as tmp:
            yield tmp  # type: ignore[misc]
            tmp.seek(0)
            shutil.copyfileobj(tmp, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
        return
    path = Path(dst)
    if src is not None and os.fspath(src) != "-" and path.exists() and path.samefile(src):
        raise OutputError(f"{path}: output would overwrite the input")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists (use --force to overwrite)")
    with atomic_file(path, "w+b", force) as f:  # without force the final name is created exclusively
        yield f
