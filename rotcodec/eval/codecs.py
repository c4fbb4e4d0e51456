"""The codecs `rotcodec eval` compares, behind one call: a rotcodec model through the real `.rcq` bitstream
(`NeuralCodec`), the same model with its quantizer bypassed (`NeuralCodec.run_ceiling`, no bitstream) and the
classic command-line codecs (`run_baseline`); each encode/decode is a `CodecRun`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from rotcodec.bitstream import CodingMode
from rotcodec.eval.baselines import get_baseline
from rotcodec.eval.diagnosis import CEILING, Ceiling, ceiling_decode, side_rows_name, side_suffix

if TYPE_CHECKING:
    from rotcodec.bitstream.layout import StreamLayout


class RateTarget(NamedTuple):
    """An eval job that plans each file at `kbps` as `rotcodec compress --kbps` does (beside `StreamLayout`)."""

    kbps: float


class EvalError(ValueError):
    """Bad `rotcodec eval` input: data path, model, bitrate list, baseline name."""


@dataclass
class CodecRun:
    """One encode/decode: decoded `[channels, time]` float32 at the evaluation rate, aligned to the input;
    rates in kbps (NaN and n_bytes None when nothing is coded: the ceiling), times in seconds."""

    decoded: np.ndarray
    kbps_measured: float
    kbps_file: float
    n_bytes: int | None
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

    def settings_for_kbps(self, kbps: Sequence[float]) -> list[tuple[str, float, RateTarget]]:
        """(setting label, nominal kbps, `RateTarget`) per requested kbps: each file is then planned as
        `rotcodec compress --kbps` plans it, from its own audio (`CodecModel.plan_file`)."""
        return [(f"{float(k):g}", float(k), RateTarget(float(k))) for k in kbps]

    def settings_for_n_q(
        self, n_qs: Sequence[int] | None = None, envelope: Sequence[int | None] = (0,)
    ) -> list[tuple[str, float, StreamLayout]]:
        """(setting label, expected kbps, `StreamLayout`) for the given stage counts (default 1..n_q), once per
        `envelope` tier (None: no band gains; tier 0 on a model without an envelope means none too). Labels are
        "nqN" plus the side rows sent (`diagnosis.side_suffix`): "nq3+pitch+env", "nq3+pitch+env2", "nq3+pitch",
        "nq3"; the expected kbps counts them too. Repeated stage counts, and tiers that a model cannot tell
        apart, are listed once."""
        n_qs = list(n_qs) if n_qs else list(range(1, self.codec.n_q + 1))
        out: list[tuple[str, float, StreamLayout]] = []
        for env in envelope:
            for n in n_qs:
                try:
                    self.model.plan(n_q=n)  # the same message as compress for a stage count the model lacks
                    s = self.codec.layout(n, env)
                except ValueError as exc:
                    raise EvalError(str(exc)) from None
                label = f"nq{s.n_q}{side_suffix(self.codec, s.envelope)}"
                if all(label != o[0] for o in out):
                    out.append((label, round(self.model.bitrate(s), 4), s))
        return out

    def ceilings(self, envelope: Sequence[int | None] = (0,)) -> list[tuple[str, float, Ceiling]]:
        """(label "ceiling" + side suffix, NaN kbps, `Ceiling`) once per distinct `envelope` choice (tier 0's
        gains applied or none: the ceiling has no other tiers)."""
        out: list[tuple[str, float, Ceiling]] = []
        for env in envelope:
            on = env is not None and self.codec.envelope is not None
            label = CEILING + side_suffix(self.codec, 0 if on else None)
            if all(label != o[0] for o in out):
                out.append((label, float("nan"), Ceiling(on)))
        return out

    def run(self, wav: np.ndarray, setting: StreamLayout | RateTarget) -> CodecRun:
        """Compress `wav` `[channels, time]` (model rate) to `.rcq` bytes with layout `setting` (or planned for
        the file at a `RateTarget`) and back."""
        from rotcodec.inference import read_rcq_header

        seconds = wav.shape[-1] / self.sample_rate
        t0 = time.perf_counter()
        if isinstance(setting, RateTarget):
            data = self.model.compress(wav, self.sample_rate, kbps=setting.kbps)
        else:
            data = self.model.compress(wav, self.sample_rate, layout=setting)
        t1 = time.perf_counter()
        decoded, _ = self.model.decompress(data)
        t2 = time.perf_counter()
        header = read_rcq_header(data)
        lay = self.model.layout_of(header)
        kbps = 8.0 * len(data) / seconds / 1000.0
        latent_error = self.latent_error(wav, lay.n_q, lay.last_codes)
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
                "n_q": lay.n_q,
                "envelope": lay.envelope is not None,
                "side_rows": side_rows_name(self.codec, lay.envelope),
                "latent_error": latent_error,
            },
        )

    def latent_error(self, wav: np.ndarray, n_q: int, last_codes: int | None = None) -> float:
        """‖z − ẑ‖² / ‖z‖² over all frames of `wav` `[channels, time]`: z the encoder's latent (`embed`), ẑ its
        n_q-stage quantization as the decoder receives it (the same codes as the bitstream's; `last_codes`: its
        last stage trimmed). 0: the decoder gets the continuous latent; about 1 or more: the quantized latent is
        no approximation of z, and the ceiling feeds the decoder something it was never trained on."""
        import torch

        with torch.no_grad():
            z = self.codec.embed(self.model._as_batch(wav))
            if z.shape[-1] == 0:
                return float("nan")
            q = self.codec.quantizer.decode(self.codec.quantizer.encode(z, n_q, last_codes))
            return float((z - q).pow(2).sum() / z.pow(2).sum().clamp_min(1e-12))

    def run_ceiling(self, wav: np.ndarray, ceiling: Ceiling) -> CodecRun:
        """`wav` `[channels, time]` (model rate) decoded with the quantizer bypassed (`ceiling_decode`); no
        bitstream, so NaN rates and no byte count. encode_seconds times `embed`; decode_seconds the rest (the
        decoder, and the pitch tracker, harmonic source and envelope analysis where the model has them)."""
        import torch

        x = self.model._as_batch(wav)
        with torch.no_grad():
            t0 = time.perf_counter()
            z = self.codec.embed(x)
            t1 = time.perf_counter()
            decoded = ceiling_decode(self.codec, x, ceiling.envelope, latent=z)
            t2 = time.perf_counter()
        nan = float("nan")
        return CodecRun(
            decoded.reshape(wav.shape[0], -1).cpu().numpy().astype(np.float32),
            nan,
            nan,
            None,
            t1 - t0,
            t2 - t1,
            {
                "kbps_payload": nan,
                "coding": "none",
                "envelope": ceiling.envelope,
                "side_rows": side_rows_name(self.codec, 0 if ceiling.envelope else None),
                "latent_error": 0.0,
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
