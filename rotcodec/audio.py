"""Audio file I/O, resampling and channel conversion.

Every array here is float32 numpy shaped [channels, time] with samples in [-1, 1] and sample rates in Hz.
Reading goes through soundfile (WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, ... whatever libsndfile reads),
resampling through soxr (HQ). "-" means stdin/stdout; open binary file objects work too. Bad input raises
`AudioError` with a one-line message; inputs are never modified and outputs are written atomically.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from .outputs import OutputError, atomic_file

MIN_SAMPLE_RATE = 1_000  # Hz; below this a header is almost certainly corrupt
MAX_SAMPLE_RATE = 768_000  # Hz; the highest rate real converters use

PathOrFile = str | os.PathLike | BinaryIO


class AudioError(ValueError):
    """Audio input or output that cannot be used (one-line message naming the file)."""


def _name(src: object) -> str:
    if src == "-":
        return "<stdin>"
    return str(getattr(src, "name", src)) if not isinstance(src, (str, os.PathLike)) else str(src)


def check_sample_rate(sr: object, what: str = "sample rate") -> int:
    """Return `sr` as int after checking it lies in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] Hz."""
    whole = isinstance(sr, (int, np.integer)) or (isinstance(sr, (float, np.floating)) and float(sr).is_integer())
    if isinstance(sr, bool) or not whole:
        raise AudioError(f"{what} must be a whole number of Hz, got {sr!r}")
    sr = int(sr)  # type: ignore[arg-type]
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{what} {sr} Hz is outside the supported {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return sr


def check_input_file(src: str | os.PathLike, kind: str = "a file") -> Path:
    """`src` as a Path if it is an existing, non-empty file; AudioError naming the problem otherwise."""
    path = Path(src)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not {kind}")
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end; '-' reads stdin
        raise AudioError(f"{path}: not a regular file (pipe or device); use '-' to read from stdin")
    if st.st_size == 0:
        raise AudioError(f"{path}: empty file")
    return path


def _open_source(src: PathOrFile) -> BinaryIO | str:
    """Resolve `src` into something soundfile can open, raising AudioError for bad paths."""
    if isinstance(src, str) and src == "-":
        data = sys.stdin.buffer.read()
        if not data:
            raise AudioError("<stdin>: empty input")
        return io.BytesIO(data)  # soundfile needs a seekable stream
    if isinstance(src, (str, os.PathLike)):
        return str(check_input_file(src, "an audio file"))
    if not hasattr(src, "read"):
        raise AudioError(f"cannot read audio from {type(src).__name__}; give a path, '-' or a binary file")
    if not (hasattr(src, "seekable") and src.seekable()):
        data = src.read()
        if not data:
            raise AudioError(f"{_name(src)}: empty input")
        return io.BytesIO(data)
    return src


def check_finite(wav: np.ndarray, name: str) -> None:
    """Raise AudioError if `wav` holds NaN or Inf samples."""
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{name}: contains NaN or Inf samples")


def load_audio(src: PathOrFile) -> tuple[np.ndarray, int]:
    """Read an audio file fully.

    Args:
        src: a path, "-" for stdin, or a binary file object.
    Returns:
        (wav float32 [channels, time] in [-1, 1], sample rate in Hz).
    """
    name = _name(src)
    handle = _open_source(src)
    check_wav_complete(handle, name)
    try:
        with sf.SoundFile(handle) as f:
            frames = -1  # all
            if f.frames >= UNKNOWN_FRAMES:  # no length in the header: decode once to find it
                frames = count_frames(f, name)
                f.seek(0)
            data, sr = f.read(frames, dtype="float32", always_2d=True), f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{name}: not a readable audio file ({msg})") from None
    sr = check_sample_rate(sr, f"{name}: sample rate")
    if data.shape[0] == 0:
        raise AudioError(f"{name}: contains no audio samples (zero length)")
    check_finite(data, name)
    return np.ascontiguousarray(data.T), sr


UNKNOWN_FRAMES = 1 << 62  # libsndfile reports 2**63 - 1 frames when a header states no length


def count_frames(handle: sf.SoundFile, name: str) -> int:
    """Frames of an open file found by decoding it from the start (for headers without a trustworthy
    length: compressed formats, or a FLAC whose STREAMINFO length is 0). AudioError if decoding fails."""
    try:
        handle.seek(0)
        return sum(len(b) for b in handle.blocks(1 << 16, dtype="float32", always_2d=True))
    except (sf.LibsndfileError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{name}: not a readable audio file ({msg})") from None


def check_wav_complete(src: str | os.PathLike | BinaryIO, name: str) -> None:
    """AudioError if `src` is a RIFF/WAVE file whose `data` chunk promises more bytes than the file holds (a cut
    copy or download: libsndfile silently reads what is there). Other formats, and the sizes 0 and 0xFFFFFFFF
    that streaming writers leave for "unknown", pass. A file object's position is restored."""
    own = isinstance(src, (str, os.PathLike))
    f = open(src, "rb") if own else src  # noqa: SIM115 (closed below)
    try:
        start = f.tell()
        try:
            f.seek(0, io.SEEK_END)
            size = f.tell()
            f.seek(0)
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                cid, length = struct.unpack("<4sI", f.read(8))
                if cid == b"data":
                    held = size - pos - 8
                    if length not in (0, 0xFFFFFFFF) and length > held:
                        raise AudioError(
                            f"{name}: truncated WAV: its header promises {length} bytes of audio, the file holds {held}"
                        )
                    return
                pos += 8 + length + (length & 1)  # chunks are padded to even sizes
        finally:
            f.seek(start)
    finally:
        if own:
            f.close()


def read_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """soundfile.info with the same checks and errors as `load_audio` (header only, fast; a header that
    states no length is checked by decoding the file)."""
    handle = _open_source(path)
    check_wav_complete(handle, str(path))
    try:
        info = sf.info(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: not a readable audio file ({msg})") from None
    check_sample_rate(info.samplerate, f"{path}: sample rate")
    if info.frames >= UNKNOWN_FRAMES:
        with sf.SoundFile(handle) as f:
            info.frames = count_frames(f, str(path))
        info.duration = info.frames / info.samplerate
    if info.frames <= 0:
        raise AudioError(f"{path}: contains no audio samples (zero length)")
    return info


def as_2d(wav: np.ndarray) -> np.ndarray:
    """View a [time] or [channels, time] array as [channels, time]."""
    wav = np.asarray(wav)
    if wav.ndim == 1:
        return wav[None, :]
    if wav.ndim != 2:
        raise AudioError(f"audio must be shaped [time] or [channels, time], got shape {wav.shape}")
    return wav


# Integer PCM is scaled to [-1, 1) as soundfile reads it: full scale is 2 ** (bits - 1).
_PCM_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}


def as_audio(wav: np.ndarray, name: str = "audio") -> np.ndarray:
    """The Python API's audio: `[time]`, `[channels, time]` or soundfile's `[time, channels]` (the longer axis
    is time; a square array is refused as ambiguous), float or int16/int32 PCM (scaled to [-1, 1)) ->
    float32 `[channels, time]`."""
    x = np.asarray(wav)
    if x.dtype.kind in "iu":
        if x.dtype not in _PCM_SCALE:
            raise AudioError(f"{name}: integer audio must be int16 or int32 PCM, got {x.dtype}")
        x = x.astype(np.float32) / np.float32(_PCM_SCALE[x.dtype])
    elif x.dtype.kind != "f":
        raise AudioError(f"{name}: audio must be float or int16/int32 PCM, got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[0] == x.shape[1] and x.shape[0] > 1:
        raise AudioError(
            f"{name}: audio of shape {x.shape} is ambiguous; pass [channels, time] with more samples than channels"
        )
    if x.ndim == 2 and x.shape[0] > x.shape[1] > 0:
        x = x.T  # soundfile's [time, channels]
    return as_2d(x.astype(np.float32, copy=False))


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample with soxr HQ.

    Args:
        wav: [channels, time] or [time] float array.
        sr_in, sr_out: sample rates in Hz.
    Returns:
        float32 array of the same rank, time axis ≈ round(time * sr_out / sr_in).
    """
    sr_in = check_sample_rate(sr_in, "input sample rate")
    sr_out = check_sample_rate(sr_out, "output sample rate")
    was_1d = np.ndim(wav) == 1
    x = as_2d(wav).astype(np.float32, copy=False)
    if sr_in == sr_out:
        out = x.copy()
    elif x.shape[1] == 0:
        out = np.zeros((x.shape[0], 0), np.float32)
    else:
        out = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ").T
        out = np.ascontiguousarray(out, dtype=np.float32)
    return out[0] if was_1d else out


def to_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """Convert [channels_in, time] to [channels, time]: mean mix-down to mono or duplicate mono.

    Other conversions (e.g. 6 -> 2) are ambiguous and raise AudioError.
    """
    x = as_2d(wav)
    if channels < 1:
        raise AudioError(f"channel count must be >= 1, got {channels}")
    c = x.shape[0]
    if c == channels:
        return x.astype(np.float32, copy=True)
    if channels == 1:
        return x.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    if c == 1:
        return np.repeat(x.astype(np.float32), channels, axis=0)
    raise AudioError(f"cannot convert {c} channels to {channels}; only mono<->N conversions are defined")


_FORMATS = {"wav": "WAV", "flac": "FLAC"}
_INT_SUBTYPES = {"PCM_16", "PCM_24", "PCM_32", "PCM_S8", "PCM_U8"}


def save_audio(
    dest: PathOrFile,
    wav: np.ndarray,
    sr: int,
    format: str | None = None,
    subtype: str = "PCM_16",
    force: bool = False,
) -> None:
    """Write [channels, time] (or [time]) audio to a file, "-" (stdout) or a binary file object.

    Paths are written atomically (temp file in the same folder, then published by `rotcodec.outputs`) and an
    existing file is only replaced with force=True. `format` is "wav" or "flac" (default: from the suffix, else wav).
    Integer subtypes clip to [-1, 1] rather than wrapping around.
    """
    sr = check_sample_rate(sr)
    x = as_2d(np.asarray(wav, dtype=np.float32))
    if x.shape[1] == 0:
        raise AudioError(f"{_name(dest)}: refusing to write zero-length audio")
    check_finite(x, _name(dest))
    if format is None:
        suffix = Path(dest).suffix.lower().lstrip(".") if isinstance(dest, (str, os.PathLike)) else ""
        format = suffix if suffix in _FORMATS else "wav"
    if format.lower() not in _FORMATS:
        raise AudioError(f"unsupported output format {format!r}; choose from {sorted(_FORMATS)}")
    fmt = _FORMATS[format.lower()]
    subtype = subtype.upper()
    if not sf.check_format(fmt, subtype):
        raise AudioError(f"subtype {subtype} is not valid for {fmt}")
    if subtype in _INT_SUBTYPES:
        x = np.clip(x, -1.0, 1.0)
    frames = np.ascontiguousarray(x.T)

    if isinstance(dest, str) and dest == "-":
        buf = io.BytesIO()
        sf.write(buf, frames, sr, format=fmt, subtype=subtype)
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return
    if not isinstance(dest, (str, os.PathLike)):
        sf.write(dest, frames, sr, format=fmt, subtype=subtype)
        return

    path = Path(dest)
    if path.is_dir():
        raise AudioError(f"{path}: is a directory")
    if path.exists() and not force:
        raise AudioError(f"{path}: already exists (use force=True / --force to overwrite)")
    if not path.parent.is_dir():
        raise AudioError(f"{path}: folder {path.parent} does not exist")
    try:
        with atomic_file(path, "wb", force) as fh:  # without force the name is created exclusively
            sf.write(fh, frames, sr, format=fmt, subtype=subtype)
    except OutputError as exc:
        raise AudioError(str(exc)) from None
