"""The codecs `rotcodec eval` compares, behind one call: a rotcodec model through the real `.rcq` bitstream
(`NeuralCodec`) and the classic command-line codecs (`run_baseline`); each encode/decode is a `CodecRun`."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rotcodec.bitstream import CodingMode
from rotcodec.eval.baselines import get_baseline

if TYPE_CHECKING:
    from rotcodec.inference.model import Setting


class EvalError(ValueError):
    """Bad `rotcodec eval` input: data path, model, bitrate list, baseline name."""


@dataclass
class CodecRun:
    """One encode/decode: decoded `[channels, time]` float32 at the evaluation rate, aligned to the input."""

    decoded: np.ndarray
    kbps_measured: float
    kbps_file: float
    n_bytes: int
    encode_seconds: float
    decode_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


class NeuralCodec:
    """A rotcodec model evaluated through the `.rcq` bitstream that `rotcodec compress` writes (the same
    `CodecModel.compress`/`decompress` path, so the bitrate is measured from the real byte count)."""

    def __init__(self, model: str | Path, name: str = "rotcodec") -> None:
        from rotcodec.inference import load_model
        from rotcodec.models.io import ModelFileError
        from rotcodec.pretrained import ModelNotFoundError

        try:
            self.model = load_model(model)  # a bundled/local name or a path
        except (ModelFileError, ModelNotFoundError) as exc:
            raise EvalError(f"cannot load model: {exc}") from None
        self.name = name
        self.codec = self.model.codec

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def channels(self) -> int:
        return self.codec.channels

    def settings_for_kbps(self, kbps: Sequence[float]) -> list[tuple[str, float, Setting]]:
        """(setting label, nominal kbps, `Setting`) per requested kbps, chosen as `rotcodec compress --kbps`
        does; a kbps that maps to an already listed setting is dropped with a warning (identical streams)."""
        out: list[tuple[str, float, Setting]] = []
        for k in kbps:
            setting = self.model.setting_for(float(k))
            if any(s == setting for _, _, s in out):
                warnings.warn(f"{k:g} kbps maps to {setting} like a lower setting; skipped", stacklevel=2)
                continue
            out.append((f"{float(k):g}", float(k), setting))
        return out

    def settings_for_n_q(self, n_qs: Sequence[int] | None = None) -> list[tuple[str, float, Setting]]:
        """(setting label "nqN", expected kbps, `Setting`) for the given stage counts (default 1..n_q)."""
        n_qs = list(n_qs) if n_qs else list(range(1, self.codec.n_q + 1))
        settings = [self.model.setting_for(n_q=n) for n in n_qs]
        return [(f"nq{s.n_q}", round(self.model.bitrate(s.n_q, envelope=s.envelope), 4), s) for s in settings]

    def run(self, wav: np.ndarray, setting: Setting) -> CodecRun:
        """Compress `wav` `[channels, time]` (model rate) to `.rcq` bytes with `setting` and back."""
        from rotcodec.inference import read_rcq_header

        seconds = wav.shape[-1] / self.sample_rate
        t0 = time.perf_counter()
        data = self.model.compress(wav, self.sample_rate, n_q=setting.n_q, envelope=setting.envelope)
        t1 = time.perf_counter()
        decoded, _ = self.model.decompress(data)
        t2 = time.perf_counter()
        header = read_rcq_header(data)
        kbps = 8.0 * len(data) / seconds / 1000.0
        plain = header.coding_mode == CodingMode.PLAIN
        return CodecRun(
            decoded.astype(np.float32),
            kbps,
            kbps,
            len(data),
            t1 - t0,
            t2 - t1,
            {
                "kbps_payload": header.plain_kbps if plain else float("nan"),
                "coding": CodingMode(header.coding_mode).name.lower(),
                "envelope": setting.envelope,
            },
        )


def run_baseline(name: str, wav: np.ndarray, sr: int, kbps: float) -> CodecRun:
    """A classic codec on each channel of `wav` `[channels, time]` at `sr` Hz (bitrates add up)."""
    codec = get_baseline(name)
    results = [codec.run(np.ascontiguousarray(ch, dtype=np.float32), sr, kbps) for ch in wav]
    return CodecRun(
        np.stack([r.decoded for r in results]),
        sum(r.kbps_measured for r in results),
        sum(r.kbps_file for r in results),
        int(round(sum(r.kbps_file for r in results) * 1000 / 8 * wav.shape[-1] / sr)),
        sum(r.encode_seconds for r in results),
        sum(r.decode_seconds for r in results),
    )
