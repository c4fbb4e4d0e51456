"""Classic-codec baselines (Opus, Codec2, MP3) run through their real command-line tools in a temp dir.

Every baseline takes mono float audio `[time]` at `sr` Hz and returns the decoded signal `[time]` float32
at the same rate and length, delay-aligned to the input, plus measured bitrate (kbps) and the wall-clock
seconds of the encode and decode commands (process start-up included: these are not codec-core timings).

Bitrates reported (`kbps_measured`):
- opus: Opus packet payload (Ogg pages parsed, OpusHead/OpusTags excluded) over the input duration;
  `kbps_file` is the whole .opus file (Ogg container adds ~1 kbps at low rates).
- codec2: size of the .bit file over the input duration (700C stores 28-bit frames in 4 bytes: 0.8 kbps).
- mp3: size of the .mp3 file (frames plus LAME info frame) over the input duration.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf
import soxr

from rotcodec.eval.align import compensate_delay, correlation_peak


class MissingEncoderError(RuntimeError):
    """A codec command-line tool is not on PATH; the message names the Debian package to install."""


class EncoderFailedError(RuntimeError):
    """A codec command-line tool exited with an error (message ends with the tail of its stderr)."""


class BaselineInputError(ValueError):
    """Bad audio, sample rate, bitrate/mode or baseline name given to a baseline."""


@dataclass(frozen=True)
class BaselineResult:
    """Output of `BaselineCodec.run`: `decoded` is `[time]` float32 at the input rate and length."""

    decoded: np.ndarray
    kbps_measured: float
    encode_seconds: float
    decode_seconds: float
    kbps_file: float
    details: dict[str, float | str] = field(default_factory=dict)


def run_tool(args: list[str], cwd: Path) -> float:
    """Run one command-line tool; return its wall-clock seconds or raise a one-line error."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError as exc:
        raise MissingEncoderError(f"{args[0]} could not be started: {exc}") from exc
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:])[-300:] or "(no stderr)"
        raise EncoderFailedError(f"{args[0]} failed with exit code {proc.returncode}: {tail}")
    return seconds


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    return x if sr_in == sr_out else soxr.resample(x, sr_in, sr_out)


def _number(kbps: float | str) -> float | None:
    if isinstance(kbps, str | bool):
        return None
    try:
        return float(kbps)
    except (TypeError, ValueError):
        return None


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    return compensate_delay(np.asarray(x, dtype=np.float32), 0, length)


class BaselineCodec(ABC):
    """A classic codec driven through its command-line tools. Subclasses set the class attributes."""

    name: ClassVar[str]
    package: ClassVar[str]  # Debian package providing `tools`
    tools: ClassVar[tuple[str, ...]]
    bitrates: ClassVar[tuple[float, ...]]  # suggested operating points, kbps (nominal)

    def is_available(self) -> bool:
        """True if every tool is on PATH."""
        return all(shutil.which(t) for t in self.tools)

    def require(self) -> None:
        """Raise `MissingEncoderError` naming the Debian package if a tool is missing."""
        for tool in self.tools:
            if shutil.which(tool) is None:
                raise MissingEncoderError(
                    f"{self.name} baseline needs '{tool}' on PATH: install the Debian package "
                    f"'{self.package}' (apt-get install {self.package})"
                )

    def run(self, wav: np.ndarray, sr: int, kbps: float) -> BaselineResult:
        """Encode and decode mono `wav` `[time]` (float, nominally in [-1, 1]) at `sr` Hz and `kbps`.

        Samples outside [-1, 1] are clipped before encoding (counted in `details["clipped_samples"]`).
        """
        x = np.asarray(wav)
        if x.ndim != 1 or x.size == 0 or x.dtype.kind != "f":
            raise BaselineInputError(f"wav must be a non-empty float [time] array, got {x.dtype} {x.shape}")
        if not np.all(np.isfinite(x)):
            raise BaselineInputError("wav contains NaN or Inf")
        if isinstance(sr, bool) or not isinstance(sr, int | np.integer) or sr <= 0:
            raise BaselineInputError(f"sample rate must be a positive integer (Hz), got {sr!r}")
        setting = self.check_kbps(kbps)
        self.require()
        clipped = int(np.count_nonzero(np.abs(x) > 1.0))
        x = np.clip(x, -1.0, 1.0).astype(np.float32)
        with tempfile.TemporaryDirectory(prefix=f"rotcodec-{self.name}-") as tmp:
            result = self._run(Path(tmp), x, int(sr), setting)
        result.details["clipped_samples"] = clipped
        return result

    @abstractmethod
    def check_kbps(self, kbps: float | str) -> float | str:
        """Validate a bitrate (or mode) and return the setting passed to the tool."""

    @abstractmethod
    def _run(self, tmp: Path, x: np.ndarray, sr: int, setting: float | str) -> BaselineResult: ...


def ogg_packet_sizes(data: bytes) -> list[int]:
    """Sizes in bytes of all packets in a single-stream Ogg file, reassembled from the page lacing values."""
    sizes: list[int] = []
    current, pos = 0, 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS" or pos + 27 > len(data):
            raise EncoderFailedError(f"malformed Ogg page at byte {pos}")
        n_segments = data[pos + 26]
        lacing = data[pos + 27 : pos + 27 + n_segments]
        for value in lacing:
            current += value
            if value < 255:  # a lacing value below 255 ends the packet
                sizes.append(current)
                current = 0
        pos += 27 + n_segments + sum(lacing)
    return sizes


class OpusBaseline(BaselineCodec):
    """Opus (libopus via opus-tools) in hard CBR; opusdec removes the pre-skip, so no further alignment."""

    name = "opus"
    package = "opus-tools"
    tools = ("opusenc", "opusdec")
    bitrates = (6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)

    def check_kbps(self, kbps: float | str) -> float:
        value = _number(kbps)
        if value is None or not 6.0 <= value <= 256.0:
            raise BaselineInputError(f"opus bitrate must be a number in [6, 256] kbps, got {kbps!r}")
        return value

    def _run(self, tmp: Path, x: np.ndarray, sr: int, setting: float | str) -> BaselineResult:
        sf.write(tmp / "in.wav", x, sr, subtype="FLOAT")
        enc = run_tool(["opusenc", "--quiet", "--hard-cbr", "--bitrate", f"{setting:g}", "in.wav", "out.opus"], tmp)
        dec = run_tool(["opusdec", "--quiet", "--float", "--rate", str(sr), "out.opus", "out.wav"], tmp)
        decoded, _ = sf.read(tmp / "out.wav", dtype="float32", always_2d=True)
        data = (tmp / "out.opus").read_bytes()
        packets = ogg_packet_sizes(data)
        if len(packets) < 2:
            raise EncoderFailedError(f"opusenc wrote {len(packets)} Ogg packets; expected OpusHead and OpusTags")
        payload = sum(packets[2:])  # packets 0 and 1 are the OpusHead and OpusTags headers
        seconds = x.size / sr
        pre_skip = int.from_bytes(data[27 + data[26] + 10 : 27 + data[26] + 12], "little")
        return BaselineResult(
            decoded=_fit(decoded[:, 0], x.size),
            kbps_measured=8.0 * payload / seconds / 1000.0,
            encode_seconds=enc,
            decode_seconds=dec,
            kbps_file=8.0 * len(data) / seconds / 1000.0,
            details={"bitrate_source": "opus packet payload", "packets": len(packets) - 2, "pre_skip_48k": pre_skip},
        )


class Codec2Baseline(BaselineCodec):
    """Codec 2 at 8 kHz (c2enc/c2dec). `kbps` is 3.2, 1.6 or 0.7, or the mode name "3200"/"1600"/"700C".

    Codec 2 is a parametric vocoder (synthetic phase), so waveform cross-correlation is unreliable; the
    decoder delay is a per-mode constant measured on gated harmonic test signals (median of envelope
    cross-correlations: 160 samples at 8 kHz for 3200/1600, 240 for 700C, spread about +-20 samples).
    """

    name = "codec2"
    package = "codec2"
    tools = ("c2enc", "c2dec")
    bitrates = (3.2, 1.6, 0.7)
    modes: ClassVar[dict[str, float]] = {"3200": 3.2, "1600": 1.6, "700C": 0.7}
    delays_8k: ClassVar[dict[str, int]] = {"3200": 160, "1600": 160, "700C": 240}

    def check_kbps(self, kbps: float | str) -> str:
        if isinstance(kbps, str) and kbps.upper() in self.modes:
            return kbps.upper()
        value = _number(kbps)
        for mode, nominal in self.modes.items():
            if value is not None and abs(value - nominal) < 1e-6:
                return mode
        raise BaselineInputError(f"codec2 supports kbps 3.2, 1.6, 0.7 (modes 3200, 1600, 700C), got {kbps!r}")

    def _run(self, tmp: Path, x: np.ndarray, sr: int, setting: float | str) -> BaselineResult:
        mode = str(setting)
        x8 = _resample(x, sr, 8000)
        pcm = np.clip(np.round(x8 * 32767.0), -32768, 32767).astype("<i2")
        pcm.tofile(tmp / "in.raw")
        enc = run_tool(["c2enc", mode, "in.raw", "out.bit"], tmp)
        dec = run_tool(["c2dec", mode, "out.bit", "out.raw"], tmp)
        y8 = np.fromfile(tmp / "out.raw", dtype="<i2").astype(np.float32) / 32768.0
        y8 = compensate_delay(y8, self.delays_8k[mode], x8.size)
        kbps = 8.0 * (tmp / "out.bit").stat().st_size / (x.size / sr) / 1000.0
        return BaselineResult(
            decoded=_fit(_resample(y8, 8000, sr), x.size),
            kbps_measured=kbps,
            encode_seconds=enc,
            decode_seconds=dec,
            kbps_file=kbps,
            details={
                "bitrate_source": "codec2 .bit file size",
                "mode": mode,
                "delay_samples_8k": self.delays_8k[mode],
                "delay_source": "constant",
            },
        )


class Mp3Baseline(BaselineCodec):
    """MP3 (LAME) mono CBR, resampled by LAME to 8 kHz below 16 kbps (or for inputs under 16 kHz), else 16 kHz.

    The decoder output lags by LAME's encoder delay (576 samples at the MP3 rate with `lame --decode`);
    the delay is measured by waveform cross-correlation and the constant is used when the correlation peak
    is weak (normalised height < 0.5, e.g. near-silent input).
    """

    name = "mp3"
    package = "lame"
    tools = ("lame",)
    bitrates = (8.0, 16.0, 24.0, 32.0, 40.0, 48.0, 56.0, 64.0)
    known_delay = 576

    def check_kbps(self, kbps: float | str) -> float:
        value = _number(kbps)
        if value is None or value not in self.bitrates:
            raise BaselineInputError(f"mp3 bitrate must be one of {self.bitrates} kbps, got {kbps!r}")
        return value

    def _run(self, tmp: Path, x: np.ndarray, sr: int, setting: float | str) -> BaselineResult:
        kbps = float(setting)
        rate = 8000 if kbps < 16 or sr < 16000 else 16000
        sf.write(tmp / "in.wav", x, sr, subtype="FLOAT")
        args = ["lame", "--quiet", "-m", "m", "--cbr", "-b", f"{kbps:g}", "--resample", str(rate // 1000)]
        enc = run_tool([*args, "in.wav", "out.mp3"], tmp)
        dec = run_tool(["lame", "--quiet", "--decode", "out.mp3", "out.wav"], tmp)
        y, y_rate = sf.read(tmp / "out.wav", dtype="float32", always_2d=True)
        ref = _resample(x, sr, y_rate)
        lag, height = correlation_peak(ref, y[:, 0], max_lag=3 * self.known_delay)
        delay, source = (lag, "cross-correlation") if height >= 0.5 else (self.known_delay, "constant")
        aligned = compensate_delay(y[:, 0], delay, ref.size)
        size_kbps = 8.0 * (tmp / "out.mp3").stat().st_size / (x.size / sr) / 1000.0
        return BaselineResult(
            decoded=_fit(_resample(aligned, y_rate, sr), x.size),
            kbps_measured=size_kbps,
            encode_seconds=enc,
            decode_seconds=dec,
            kbps_file=size_kbps,
            details={
                "bitrate_source": "mp3 file size",
                "mp3_rate_hz": y_rate,
                "delay_samples_mp3_rate": delay,
                "delay_source": source,
            },
        )


_REGISTRY: dict[str, type[BaselineCodec]] = {"opus": OpusBaseline, "codec2": Codec2Baseline, "mp3": Mp3Baseline}


def list_baselines() -> list[str]:
    """Names accepted by `get_baseline`."""
    return list(_REGISTRY)


def get_baseline(name: str) -> BaselineCodec:
    """A fresh baseline codec by name ("opus", "codec2", "mp3"; case-insensitive)."""
    try:
        return _REGISTRY[name.lower()]()
    except (KeyError, AttributeError):
        raise BaselineInputError(f"unknown baseline {name!r}; choose from {', '.join(_REGISTRY)}") from None
