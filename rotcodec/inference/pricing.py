"""What a file's code rows cost under a model's tables, measured on a probe of its own audio (`FileCosts`),
and where that probe is taken (`probe_spans`, `probe_reads`). `CodecModel.plan` prices layouts with it.

Pricing is lazy: one encoder pass gives the pitch row and every stage exactly; band gains need a decode at
the stage count they follow, so a count is decoded only when a plan first asks for it (a plan asks for two
or three, not every count), and a trimmed stage is measured only for the stage a plan tries to fill with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import soxr
import torch
from torch.nn.utils import parametrize

from ..bitstream.layout import StreamLayout

if TYPE_CHECKING:
    from .model import CodecModel

# Entropy-coded streams cost more on unseen speakers than the model's tables (counted on training audio)
# predict: 5.75 measured against 5.50 kbps expected at `--kbps 6` on the test speakers (docs/results/band_envelope).
# Planned from the tables alone, `--kbps` aims 5% lower. Files are planned from PROBE_SECONDS of their own audio
# instead, which predicts a whole file within about 1% on the test speakers, so the aim is only 2% lower. The
# probe is PROBE_PIECES pieces spread evenly over the file, not its opening: a file that opens with 10 s of
# near-silence and then speaks came out at 1.8x the request when its opening priced the plan
# (tests/test_rate_ceiling.py). Each piece after the first is read with PROBE_LEAD_SECONDS of the audio before
# it, coded but not counted: the first two frames after a cut cost ~9% more than the same frames in the whole
# file, which biased the probe 0.3% high on the test speakers (docs/results/planner_speed). 20 shorter pieces
# followed those speakers' files more closely but alias with periodic audio: a 13 s vowel with 3 Hz AM was
# probed 1.7% low and came out over --kbps (tests/test_rate_ceiling.py).
RATE_MARGIN = 1.05
PROBE_MARGIN = 1.02
# --kbps promises a file of PROBE_SECONDS or more within 5% under the request. A stream that comes out over it,
# or further under, was priced too cheap or too dear by its probe, and is planned and coded again
# (`CodecModel.replan`).
RATE_SLACK = 0.05
REPLAN_TRIES = 3  # codings of a replanned file at most, beyond its first
PROBE_SECONDS = 10.0
PROBE_PIECES = 10
PROBE_LEAD_SECONDS = 0.06
PROBE_BATCH_SECONDS = 10.0  # channel-seconds per rate-probe call: one channel of the 10 s probe


def probe_spans(length: int, sr: int) -> list[tuple[int, int]]:
    """Where a file of `length` samples at `sr` Hz is priced for its plan: (start, count) in samples. The
    whole file if it lasts PROBE_SECONDS or less, else PROBE_PIECES pieces of PROBE_SECONDS / PROBE_PIECES
    each, spread evenly from its start to its end."""
    total = int(PROBE_SECONDS * sr)
    if length <= total:
        return [(0, length)]
    piece = total // PROBE_PIECES
    return [(round(i * (length - piece) / (PROBE_PIECES - 1)), piece) for i in range(PROBE_PIECES)]


def probe_reads(length: int, sr: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """What is read for a probe: the (start, count) spans of the file (`probe_spans`, each after the first
    with up to PROBE_LEAD_SECONDS of the audio before it), and where in the joined read those lead-ins lie,
    (offset, count): coded, so the piece starts as it would in the whole file, but not counted."""
    lead = int(PROBE_LEAD_SECONDS * sr)
    reads, skip, end, offset = [], [], 0, 0
    for start, count in probe_spans(length, sr):
        back = min(lead, start - end) if end else 0
        reads.append((start - back, count + back))
        if back:
            skip.append((offset, back))
        offset += count + back
        end = start + count
    return reads, skip


class Probe(np.ndarray):
    """Joined probe audio `[channels, t]` that remembers where its lead-ins lie (`skip`, as `probe_reads`
    gives them), so that `row_costs(probe, sr)` leaves them uncounted as compress does."""

    skip: tuple[tuple[int, int], ...] = ()


def as_probe(x: np.ndarray, skip: Sequence[tuple[int, int]]) -> Probe:
    p = np.asarray(x).view(Probe)
    p.skip = tuple(skip)
    return p


def probe_audio(x: np.ndarray, sr: int) -> Probe:
    """What a plan is priced on for audio x `[channels, t]` at `sr` Hz: its `probe_reads`, joined."""
    reads, skip = probe_reads(x.shape[1], sr)
    return as_probe(np.concatenate([x[:, a : a + n] for a, n in reads], axis=1), skip)


def trim_sizes(codebook_size: int) -> list[int]:
    """The alphabet sizes a plan may trim a stage to, largest first: about 1/8 bit per code apart (at 50 Hz
    frames, ~6 bps per channel between neighbours), from 2 to just under `codebook_size`."""
    top = int(math.log2(codebook_size) * 8)
    return sorted({round(2 ** (i / 8)) for i in range(8, top + 1)} - {codebook_size}, reverse=True)


class _Lazy:
    """`fn(i)` (an array) for i in 0..count-1, computed on first use: `[i]`, `[i, j]`, `[a:b]`, `[:, j]`."""

    def __init__(self, fn: Callable[[int], np.ndarray], count: int) -> None:
        self.fn, self.count = fn, count

    def __getitem__(self, key: object) -> np.ndarray:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(first, slice):
            out = np.stack([self.fn(i) for i in range(self.count)[first]])
            return out[(slice(None), *rest)] if rest else out
        out = self.fn(int(first))
        return out[rest] if rest else out

    def __len__(self) -> int:
        return self.count


class FileCosts:
    """What one file's codes cost under a model's tables (range coding), measured on its probe.

    rows[n]: mean bits per code of every table row (`Codec.table_sizes`) in a stream of n stages: the band
    gains as measured on the decode of n stages with the tier's phase rows, as a stream sends them (n = 0 stands
    for 1). trimmed[s, j]: mean bits per code of stage s sent last, trimmed to
    its first sizes[j] codes; helps[s, j]: whether that trimmed stage brings the latent closer to the
    encoder's than leaving the stage out (a few codes far from a small residual can overshoot it: plans trim
    only to sizes that help). All are computed when first read; `decoded` lists the stage counts decoded.
    `codes(layout)` gives the codes of a stream from the same passes."""

    def __init__(self, model: CodecModel, x: np.ndarray, skip: Sequence[tuple[int, int]] = ()) -> None:
        codec = self.codec = model.codec
        self.model = model
        hop = codec.hop_length
        frames = x.shape[1] // hop
        keep = np.ones(frames, bool)
        for a, n in skip:  # lead-in samples at the model rate -> the frames they touch
            keep[a // hop : -(-(a + n) // hop)] = False
        self.keep = torch.from_numpy(keep)
        seconds = max(x.shape[1] / codec.sample_rate, 1e-9)
        per = model._group_rows(max(1, int(PROBE_BATCH_SECONDS / seconds)), x.shape[0])
        self.sizes = tuple(trim_sizes(codec.codebook_size)) if model.sorted_codes else ()
        self.groups: list[dict[str, torch.Tensor]] = []
        with torch.no_grad(), parametrize.cached():  # one encoder pass per group of channels, cached
            for a in range(0, len(x), per):
                wav = codec._fold(model._as_batch(x[a : a + per]))[:, 0]
                z = codec.encoder(wav[:, None])
                g = {"x": wav, "z": z, "stages": codec.quantizer.encode(z, codec.n_q)}
                if codec.pitch_tracker is not None:
                    g["pitch"] = codec.pitch_tracker(wav)
                self.groups.append(g)
        n_rows = len(codec.table_sizes())
        self.first_stage = n_rows - codec.n_q
        self._base = np.zeros(n_rows)  # pitch and stage rows: the same whatever the stage count
        for r in [*range(codec.pitch_rows), *range(self.first_stage, n_rows)]:
            self._base[r] = self._mean_bits(r, [self._row_codes(g, r) for g in self.groups])
        self._side: dict[int, np.ndarray] = {}
        self._trim: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._locks: list[dict] | None = None
        self._decodes: dict[int, list[dict]] = {}
        self.rows = _Lazy(self._row, codec.n_q + 1)
        self.trimmed = _Lazy(lambda s: self._trimmed(s)[0], codec.n_q)
        self.helps = _Lazy(lambda s: self._trimmed(s)[1], codec.n_q)

    @property
    def decoded(self) -> list[int]:
        return sorted(self._side)

    def _row_codes(self, g: dict[str, torch.Tensor], r: int) -> torch.Tensor:
        if r < self.codec.pitch_rows:
            return g["pitch"]
        return g["stages"][:, r - self.first_stage]

    def _mean_bits(self, r: int, codes: list[torch.Tensor]) -> float:
        """Mean bits of table row r's codes `[rows, frames]` (one per group), counted frames only; a context row's
        codes are priced after the previous frame's (the probe's first frame as a chunk's first)."""
        bits = self.model._context_bits.get(r)
        if bits is None:
            picked = torch.cat([c[:, self.keep[: c.shape[-1]]] for c in codes]).reshape(-1).cpu().numpy()
            return float(self.model._code_bits[r][picked].mean()) if picked.size else 0.0
        parts = []
        for c in codes:
            c = c.cpu().numpy()
            previous = np.concatenate([np.zeros_like(c[:, :1]), c[:, :-1] + 1], axis=1)
            parts.append(bits[previous, c][:, self.keep[: c.shape[-1]].numpy()].reshape(-1))
        picked = np.concatenate(parts)
        return float(picked.mean()) if picked.size else 0.0

    def bits(self, n: int, rows: Sequence[int], gains_at: int | None = None) -> np.ndarray:
        """Mean bits per code of table rows `rows` in a stream of n stages, band gains as measured after
        `gains_at` stages (default n); decodes only for band gains, once per stage count."""
        out = self._base[list(rows)]
        if any(self.codec.pitch_rows <= r < self.first_stage for r in rows):
            out = self._row(n if gains_at is None else gains_at)[list(rows)]
        return out

    def _row(self, n: int) -> np.ndarray:
        n = max(1, n)
        if n not in self._side:
            self._side[n] = self._measure_side(n)
        return np.where(self._side[n] > -1, self._side[n], self._base)

    def _lock_rows(self) -> list[dict[tuple[int, int], torch.Tensor]]:
        """Per group, the phase rows of every kind the tiers send, by (harmonics, levels): they depend on the
        input and pitch only, so they are measured once."""
        if self._locks is None:
            codec = self.codec
            kinds = {(t.cfg.phase_harmonics, t.cfg.phase_levels) for t in codec.envelopes if t.cfg.phase_harmonics}
            kinds = kinds if codec.harmonic is not None else set()
            with torch.no_grad():
                self._locks = [{k: codec._lock(g["x"], g["pitch"], *k) for k in kinds} for g in self.groups]
        return self._locks

    def _decoded(self, n: int) -> list[dict[tuple[int, int] | None, torch.Tensor]]:
        """Per group, the uncorrected decodes `[rows, time]` of n stages: free-running (key None) and with each
        kind of phase rows, as a stream of n stages with those rows decodes them (`Codec._with_envelope`)."""
        if n not in self._decodes:
            codec, out = self.codec, []
            with torch.no_grad():
                for g, locks in zip(self.groups, self._lock_rows(), strict=True):
                    head = [g["pitch"][:, None]] if codec.pitch_rows else []
                    sent = torch.cat([*head, g["stages"][:, :n]], dim=1)
                    variants = {None: (None, 16), **{k: (v, k[1]) for k, v in locks.items()}}
                    out.append({k: y[:, 0] for k, y in codec.synthesise_variants(sent, variants).items()})
            self._decodes[n] = out
        return self._decodes[n]

    def _measure_side(self, n: int) -> np.ndarray:
        """Band gain and phase rows' bits after a decode of n stages (-1 elsewhere)."""
        codec = self.codec
        per_row: list[list[torch.Tensor]] = [[] for _ in self._base]
        if not len(codec.envelopes):
            return np.full(len(self._base), -1.0)
        spectra = codec.envelopes[0].spectra  # every tier measures the same spectra: computed once each
        with torch.no_grad():
            for g, locks, decodes in zip(self.groups, self._lock_rows(), self._decoded(n), strict=True):
                if "xspec" not in g:
                    g["xspec"] = spectra(g["x"])
                yspec = {k: spectra(y) for k, y in decodes.items()}
                r = codec.pitch_rows
                for tier in codec.envelopes:
                    kind = (tier.cfg.phase_harmonics, tier.cfg.phase_levels)
                    phases = locks.get(kind)
                    gains = tier.symbols(g["xspec"], yspec[kind if phases is not None else None])
                    for part in [gains] if phases is None else [gains, phases]:
                        for k in range(part.shape[1]):
                            per_row[r].append(part[:, k])
                            r += 1
        out = np.full(len(self._base), -1.0)
        for r, codes in enumerate(per_row):
            if codes:
                out[r] = self._mean_bits(r, codes)
        return out

    def codes(self, layout: StreamLayout) -> np.ndarray:
        """The codes a whole-file `Codec.encode` of the probe gives with `layout`, `[rows, code rows, frames]`
        (rows: the probe's channels), made from the passes pricing already ran (the encoder's, and the decode
        of the layout's stages when it was priced): for a file its probe covers whole, the file's codes."""
        codec, n, out = self.codec, layout.n_q, []
        with torch.no_grad(), parametrize.cached():
            for i, g in enumerate(self.groups):
                if layout.last_codes is None:
                    stages = g["stages"][:, :n]
                else:
                    stages = codec.quantizer.encode(g["z"], n, layout.last_codes)
                head = [g["pitch"][:, None]] if codec.pitch_rows else []
                codes = torch.cat([*head, stages], dim=1)
                if layout.envelope is not None:
                    cfg = codec.envelopes[layout.envelope].cfg
                    locks = self._lock_rows()[i]
                    kind = (cfg.phase_harmonics, cfg.phase_levels)
                    decode = None
                    if layout.last_codes is None and n in self._decodes:
                        decode = self._decodes[n][i][kind if kind in locks else None]
                    codes = codec._with_envelope(g["x"], codes, layout.envelope, locks, decode)
                out.append(codes.cpu().numpy())
        return np.concatenate(out)

    def _trimmed(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(bits, helps) of stage s sent last and trimmed to each of `sizes`."""
        if s not in self._trim:
            bits, gain = np.zeros(len(self.sizes)), np.zeros(len(self.sizes))
            if self.sizes:
                stage = self.codec.quantizer.stages[s]
                codes, total = [], torch.zeros(len(self.sizes), dtype=torch.float64)
                with torch.no_grad():
                    for g in self.groups:
                        residual = g["z"].transpose(1, 2).reshape(-1, g["z"].shape[1])
                        for k, before in enumerate(self.codec.quantizer.stages[:s]):  # as RVQ encodes them
                            residual = residual - before.decode(g["stages"][:, k].reshape(-1))
                        picks = stage.encode_prefixes(residual, list(self.sizes))  # [sizes, rows]
                        # |r|^2 - |r - q|^2 = 2 r.q - |q|^2 for every row and code, then each size's picks
                        table = stage.decode(torch.arange(stage.cfg.codebook_size))
                        gain = 2 * residual @ table.t() - table.pow(2).sum(-1)  # [rows, codes]
                        counted = self.keep[: g["z"].shape[-1]].repeat(g["z"].shape[0])
                        total += gain.gather(1, picks.t())[counted].sum(0).double()
                        codes.append(picks.reshape(len(self.sizes), g["z"].shape[0], -1))
                row = self.first_stage + s
                for j, k in enumerate(self.sizes):
                    picked = torch.cat([c[j][:, self.keep[: c.shape[-1]]] for c in codes]).reshape(-1).numpy()
                    bits[j] = self.model._trimmed_code_bits(row, k)[picked].mean() if picked.size else 0.0
                gain = total.numpy()
            self._trim[s] = (bits, gain > 0)
        return self._trim[s]


def resampled_probe(model: CodecModel, x: np.ndarray, sr: int, skip: Sequence[tuple[int, int]]) -> tuple:
    """x `[channels, t]` at `sr` Hz and its lead-ins -> both at the model's rate, x padded to whole frames."""
    if sr != model.sample_rate:
        x = soxr.resample(np.ascontiguousarray(x.T), sr, model.sample_rate, quality="HQ").T
        ratio = model.sample_rate / sr
        skip = [(int(a * ratio), math.ceil(n * ratio)) for a, n in skip]
    pad = (-x.shape[1]) % model.hop_length  # whole frames, as the stream pads the end
    return np.pad(x, ((0, 0), (0, pad))), list(skip)
