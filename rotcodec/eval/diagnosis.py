"""Codec-level diagnosis: how much of a model's distance to the input is the quantizer's, how much the decoder's.

Two kinds of `rotcodec eval` rows feed it:

- the stage sweep (`--stage-sweep` / `--n-q`): the real `.rcq` bitstream at n_q = 1..N stages, labelled
  `nq{n}` plus the side rows sent: `+pitch` (the pitch row), `+env` (the band-energy envelope rows);
- the ceiling (`--ceiling`), labelled `ceiling` plus the same suffixes: the same weights with the quantizer
  bypassed. The decoder (and the harmonic source, for models with pitch) reads the encoder's continuous
  latent `Codec.embed(wav)` instead of the quantized one; the pitch row is the encoder's own (its 128
  symbols, as sent); with `+env` the envelope gains are measured on this decode and applied, as `encode` /
  `decode` do on a quantized one (so they are still quantized to the envelope's dB steps). No bitstream:
  its kbps columns are empty.

`diagnosis_markdown` tabulates, per codec and side-row variant, every metric at each n_q (and the latent's
relative quantization error, `latent_error`), at the ceiling and for the input itself (the value a metric
gives the reference scored against itself, `PERFECT`), with the share of the one-stage-to-ceiling gap each
n_q closes.

The ceiling is an upper bound only where the quantized latent approximates the continuous one (small
`latent_error`). Where it does not (factorised codes whose residual does not shrink, as in the bundled speech
models: docs/results/residual_scale), the decoder never saw anything like z and the ceiling row says how it
copes with an input outside its training, not what a better quantizer could reach.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from rotcodec.eval.metrics import HIGHER_IS_BETTER
from rotcodec.eval.report import SUMMARY_METRICS, as_float, fmt_pm, mean_ci, present_metrics

if TYPE_CHECKING:
    from rotcodec.models.codec import Codec

CEILING = "ceiling"
# The reference scored against itself (checked in tests/test_eval_diagnosis.py). PESQ-WB's P.862.2 mapping
# tops out at 4.644; DNSMOS rates one signal, not a pair, so it has no such value.
PERFECT: dict[str, float] = {
    "si_sdr": math.inf,
    "mel_distance": 0.0,
    "mrstft": 0.0,
    "pesq_wb": 4.644,
    "stoi": 1.0,
    "periodicity_error": 0.0,
    "pitch_error": 0.0,
}
_LABEL = re.compile(r"^(?:nq(?P<n>\d+)|(?P<ceiling>ceiling))(?P<side>(?:\+[a-z]+\d*)*)$")


class Ceiling(NamedTuple):
    """The quantizer-bypassed decode as an eval job (beside `StreamLayout`): envelope tier 0's gains applied or
    not."""

    envelope: bool


def side_suffix(codec: Codec, envelope: int | None) -> str:
    """Setting-label suffix naming the side rows sent beside the stages: "+pitch" for models with a pitch row,
    "+env" when envelope tier 0's rows are sent, "+envT" for tier T; "" for neither."""
    env = "" if envelope is None or not codec.envelopes else "+env" + (str(envelope) if envelope else "")
    return ("+pitch" if codec.pitch_rows else "") + env


def side_rows_name(codec: Codec, envelope: int | None) -> str:
    """The `side_rows` column: "pitch+env", "pitch+env2", "pitch", "env" or "none"."""
    return side_suffix(codec, envelope).lstrip("+") or "none"


def parse_label(setting: str) -> tuple[int | None, str] | None:
    """A sweep or ceiling label -> (n_q, or None for the ceiling; side suffix); None for any other label."""
    m = _LABEL.match(str(setting))
    if m is None:
        return None
    return (None if m.group("ceiling") else int(m.group("n"))), m.group("side")


@torch.no_grad()
def ceiling_decode(
    codec: Codec, wav: torch.Tensor, envelope: bool = True, latent: torch.Tensor | None = None
) -> torch.Tensor:
    """Decode with the quantizer bypassed: wav `[batch, channels, time]` at the codec's rate -> `[batch,
    channels, time]` (float32, same device).

    decoder(z) with z = `codec.embed(wav)` `[batch * channels, latent_dim, frames]`; for models with pitch, the
    harmonic source reads the same z and the tracker's symbols of the input; with `envelope` (models with
    envelope rows) the band gains `BandEnvelope.analyse(input, that decode)` are applied. A whole-file pass
    through `Codec.synthesise`, as `decode` does with the quantized latent. `latent`: z when the caller has it
    already (`codec.embed(wav)`).
    """
    if codec._is_streaming:
        raise RuntimeError("ceiling_decode runs whole files, not inside codec.streaming()")
    batch, channels, length = wav.shape
    x = codec._fold(wav)  # channels coded independently, the tail zero-padded to whole frames
    z = codec.embed(wav) if latent is None else latent
    y = codec.synthesise(z, None if codec.pitch_tracker is None else codec.pitch_tracker(x[:, 0]))
    if envelope and codec.envelope is not None:
        y = codec.envelope(y[:, 0], codec.envelope.analyse(x[:, 0], y[:, 0])).unsqueeze(1)
    return y[..., :length].reshape(batch, channels, length).float()


class _Variant(NamedTuple):
    codec: str
    side: str


def _variants(rows: Sequence[dict[str, Any]]) -> dict[_Variant, dict[str, list[dict[str, Any]]]]:
    """Sweep and ceiling rows by (codec, side suffix), then by setting label."""
    out: dict[_Variant, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        parsed = parse_label(row.get("setting", ""))
        if parsed is not None:
            key = _Variant(str(row["codec"]), parsed[1])
            out.setdefault(key, {}).setdefault(str(row["setting"]), []).append(row)
    return out


def _describe(side: str) -> str:
    parts = [p for p in side.split("+") if p]
    names = {"pitch": "pitch row", "env": "envelope rows"}

    def name(part: str) -> str:
        tier = part[3:] if part.startswith("env") and part[3:].isdigit() else None
        return f"envelope tier {tier} rows" if tier else names.get(part, part)

    return " + ".join(name(p) for p in parts) + " sent" if parts else "no side rows"


def _fmt_perfect(value: float | None) -> str:
    if value is None:
        return "–"
    return "∞" if value == math.inf else f"{value:g}"


def gap_closed(value: float, one_stage: float, ceiling: float) -> float:
    """(value − one_stage) / (ceiling − one_stage): 0 at one stage, 1 at the ceiling (NaN when undefined)."""
    span = ceiling - one_stage
    if not (math.isfinite(value) and math.isfinite(one_stage) and math.isfinite(ceiling)) or span == 0:
        return math.nan
    return (value - one_stage) / span + 0.0  # + 0.0: no "-0%"


def diagnosis_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The "Diagnosis" section of summary.md ("" without sweep or ceiling rows): per codec and side-row
    variant, one line per n_q, the ceiling and the input; mean ± 95% CI (Student t) over the files that
    every line of the variant has, and the gap closed in brackets."""
    variants = _variants(rows)
    if not variants:
        return ""
    lines = [
        "## Diagnosis: quantizer versus decoder",
        "",
        "`nqN`: the real bitstream with N stages; `ceiling`: the same weights with the quantizer bypassed (the",
        "decoder and harmonic source read the encoder's continuous latent; pitch row as sent; with `+env` the",
        "envelope gains measured on that decode, still in their dB steps); `input`: the reference scored",
        "against itself. The distance from the ceiling to the input is the encoder/decoder's; from a row to",
        "the ceiling, the quantizer's. [gap closed] = (m(N) − m(1)) / (m(ceiling) − m(1)) from the means: 0% at",
        "one stage, 100% at the ceiling; above 100% the stages beat the continuous latent (a decoder trained",
        "only on quantized latents can), negative means worse than one stage. `latent_error` = ‖z − ẑ‖² / ‖z‖²,",
        "z the encoder's latent, ẑ what the decoder receives: near or above 1, the quantized latent is no",
        "approximation of z and the ceiling is a decoder input outside its training, not an upper bound.",
        "Mean ± 95% CI over the files every line of the table has.",
    ]
    for variant, by_setting in sorted(variants.items()):
        files = set.intersection(*[{str(r["file"]) for r in g} for g in by_setting.values()])
        groups = {s: [r for r in g if str(r["file"]) in files] for s, g in by_setting.items()}
        # stage counts in order, the ceiling last
        order = sorted(groups, key=lambda s: parse_label(s)[0] or math.inf)  # type: ignore[index]
        metrics = present_metrics([r for g in groups.values() for r in g], ("latent_error", *SUMMARY_METRICS))
        means = {s: {m: mean_ci(as_float(r.get(m)) for r in groups[s]) for m in metrics} for s in order}
        first = next((s for s in order if parse_label(s)[0] == 1), None)  # type: ignore[index]
        ceiling = CEILING + variant.side if CEILING + variant.side in groups else None
        arrows = {m: (" ↑" if HIGHER_IS_BETTER[m] else " ↓") if m in HIGHER_IS_BETTER else "" for m in metrics}
        lines += [
            "",
            f"### {variant.codec}, {_describe(variant.side)} ({len(files)} file{'' if len(files) == 1 else 's'})",
            "",
            "| setting | n_q | " + " | ".join(f"{m}{arrows[m]}" for m in metrics) + " |",
            "|" + "---|" * (2 + len(metrics)),
        ]
        for s in order:
            n_q = parse_label(s)[0]  # type: ignore[index]
            cells = []
            for m in metrics:
                mean, half, _ = means[s][m]
                cell = fmt_pm(mean, half)
                if m in HIGHER_IS_BETTER and first is not None and ceiling is not None and n_q is not None:
                    g = gap_closed(mean, means[first][m][0], means[ceiling][m][0])
                    cell += f" [{g:.0%}]" if math.isfinite(g) else ""
                cells.append(cell)
            lines.append(f"| {s} | {'–' if n_q is None else n_q} | " + " | ".join(cells) + " |")
        lines.append("| input | – | " + " | ".join(_fmt_perfect(PERFECT.get(m)) for m in metrics) + " |")
    return "\n".join(lines) + "\n"
