"""`CodecModel`: a loaded codec plus what `.rcq` streams need (name, fingerprint, entropy tables), with
streaming encode/decode, in-memory `compress`/`decompress` and file `compress_file`/`decompress_file`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.nn.utils import parametrize

from ..audio import AudioError, as_audio, check_finite, check_sample_rate
from ..bitstream import BitstreamError, CodingMode, RcqHeader, RcqReader, RcqWriter
from ..bitstream.entropy import TABLE_BITS, context_table, expected_bits, quantize_counts
from ..bitstream.header import pack_header, read_header
from ..bitstream.layout import StreamLayout
from ..models.codec import CodecConfig
from ..models.io import ModelFile, has_skip_code, unpack_context
from ..pretrained import ModelEntry
from .files import AudioSource, FileResult, Progress, atomic_output, kbps_of, open_audio, open_rcq
from .planner import choose, fill, search
from .pricing import (  # noqa: F401 - re-exported: the planning constants and probe live in pricing
    PROBE_MARGIN,
    PROBE_PIECES,
    PROBE_SECONDS,
    RATE_MARGIN,
    RATE_SLACK,
    REPLAN_TRIES,
    FileCosts,
    as_probe,
    probe_audio,
    probe_reads,
    probe_spans,
    resampled_probe,
    trim_sizes,
)

Sink = Callable[[np.ndarray], None]


class ModelMismatchError(ValueError):
    """An `.rcq` stream was encoded with a different model than the one given (fingerprint mismatch)."""


class OptionError(ValueError):
    """Invalid compression options (kbps / n_q / entropy) for this model."""


RECORD_BYTES = 14  # a chunk record (10 bytes) plus up to 4 bytes of range-coder word padding

# Memory: a model call's working set grows with channels x frames, and a file's header sets the channel count
# (up to 65535), so calls are batched by a budget of channel-frames rather than by the file. Measured for the
# shipped speech16k on CPU (peak RSS, one thread): 290 MB loaded; a 5 s decode step adds 210 MB for one channel
# and 190 MB per further channel (about 0.8 MB per channel-frame), an encode step 300 MB + 190 MB per further
# channel (a 12 s stereo 48 kHz file peaked at 1.0 GB in one batch), the 10 s rate probe 350 MB + 260 MB per
# further channel. One channel of a 5 s step per call keeps decoding under 0.7 GB (256 channels: 0.45 GB) and
# compressing under 0.8 GB (8 channels at 48 kHz: 0.79 GB) whatever the channel count; mono runs exactly as
# before. tests/test_inference.py decodes 256 channels under a 1 GB cap.
CPU_BATCH_FRAMES = 250
GPU_BATCH_FRAMES = 4000  # 16 channels of a 5 s step: batching is what makes GPUs pay off
OUT_PIECE_BYTES = 32 << 20  # float32 decoded audio per piece, all channels together, before 16-bit conversion


def _resampler(sr_in: int, sr_out: int, rows: int) -> soxr.ResampleStream | None:
    return None if sr_in == sr_out else soxr.ResampleStream(sr_in, sr_out, rows, dtype="float32", quality="HQ")


def _run_resampler(rs: soxr.ResampleStream | None, x: np.ndarray, last: bool) -> np.ndarray:
    """x [rows, t] -> resampled [rows, t'] (soxr streams are bit-identical to one-shot resampling)."""
    if rs is None:
        return x
    return np.ascontiguousarray(rs.resample_chunk(np.ascontiguousarray(x.T), last=last).T)


def _quality_table(meta: object) -> dict[tuple[int, int | None], float]:
    """A model file's `layout_quality` metadata (`train/quality_table.py`) as {(n_q, tier or None): distance,
    lower is better}; empty when absent or malformed (the planner then uses its fixed rule)."""
    try:
        rows = meta["table"]  # type: ignore[index]
        return {(int(n), None if int(t) < 0 else int(t)): float(v) for n, t, v in rows}
    except (TypeError, KeyError, ValueError):
        return {}


def describe_layout(config: CodecConfig, layout: StreamLayout) -> str:
    """`layout.describe()` with the tier's phase rows told apart from its band gains, by the config
    of the model that wrote the stream (a header alone cannot tell them apart)."""
    if layout.envelope is None:
        return layout.describe()
    tier = config.envelopes[layout.envelope]
    return layout.describe(tier.phase_harmonics, tier.output_phases)


def expected_frames(header: RcqHeader) -> int:
    """Code frames that `header.num_samples` original-rate samples give after resampling and padding."""
    model_len = round(header.num_samples * header.model_sample_rate / header.original_sample_rate)
    return -(-model_len // header.hop_length)


class CodecModel:
    """A loaded codec plus what `.rcq` files need: name, fingerprint, optional entropy tables.

    block_seconds: audio read per block; step_seconds: audio per model call (rounded to whole frames). Both
    bound memory. Codes depend on neither the block size nor how a file is split on input; step_seconds
    is fixed so that even exact near-ties in the quantizer's float arithmetic (whose rounding depends on
    how many frames are scored together) resolve the same way every time. `bitrate`/`plan` are in kbps
    for all channels of a file together. Non-causal (music) models cannot stream: they code each file in one
    model call, so their memory grows with the file's length.
    """

    def __init__(
        self,
        model_file: ModelFile,
        entry: ModelEntry,
        device: str = "cpu",
        block_seconds: float = 5.0,
        step_seconds: float = 5.0,
        batch_frames: int | None = None,
    ) -> None:
        self.codec = model_file.codec.eval()
        self.entry = entry
        self.name = entry.name
        self.fingerprint = entry.fingerprint
        self.device = torch.device(device)
        counts = model_file.code_counts
        self.code_counts = None if counts is None else counts.to(torch.int64).numpy()
        context = model_file.context_counts
        self.context_counts = None if context is None else unpack_context(self.codec, context.numpy())
        self.layout_quality = _quality_table(model_file.extra.get("layout_quality"))
        self._trim_cache: dict[tuple[int, int], np.ndarray] = {}
        self.block_seconds = float(block_seconds)
        self.step_seconds = float(step_seconds)
        if batch_frames is None:
            batch_frames = GPU_BATCH_FRAMES if self.device.type == "cuda" else CPU_BATCH_FRAMES
        self.batch_frames = max(1, int(batch_frames))

    # -- properties ---------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def hop_length(self) -> int:
        return self.codec.hop_length

    @property
    def n_q(self) -> int:
        return self.codec.n_q

    @property
    def has_entropy_tables(self) -> bool:
        return self.code_counts is not None

    def bitrate(
        self,
        layout: StreamLayout,
        channels: int = 1,
        entropy: bool | None = None,
        costs: FileCosts | None = None,
        gains_at: int | None = None,
    ) -> float:
        """Expected payload bitrate in kbps of a stream with `layout` for `channels` audio channels: whole bits
        per code with plain packing; with entropy coding (`entropy`: as in `coding_mode`) the bits per code
        `costs` measured on the audio (`row_costs`; band gains as after `gains_at` stages, default the
        layout's), else the tables' entropy per row. Actual entropy-coded sizes vary by file around the
        tables' figure."""
        if self.coding_mode(entropy) == CodingMode.ENTROPY:
            rows = self.codec.table_rows(layout)
            k = layout.last_codes
            bits = self._row_bits[rows] if costs is None else costs.bits(layout.n_q, rows, gains_at)
            if k is not None:
                whole = bits[-1]
                if costs is not None and k in costs.sizes:
                    bits[-1] = costs.trimmed[layout.n_q - 1, costs.sizes.index(k)]
                else:  # the trimmed table's entropy, scaled as the file's whole stage is to its table's
                    bits[-1] *= self._trimmed_bits(rows[-1], k) / max(self._row_bits[rows[-1]], 1e-9)
                if costs is not None and layout.side_rows:  # band gains after part of a stage: between
                    share = min(1.0, bits[-1] / max(whole, 1e-9))  # their prices either side
                    side = rows[: layout.side_rows]
                    before = costs.bits(layout.n_q - 1, side, None if gains_at is None else gains_at - 1)
                    bits[: len(side)] = share * bits[: len(side)] + (1 - share) * before
            return self.codec.frame_rate * float(bits.sum()) * channels / 1000.0
        else:
            return self.codec.bitrate(layout) * channels

    def tables(self, layout: StreamLayout) -> np.ndarray | None:
        """The code-frequency tables of the rows a stream with `layout` carries, as wide as its largest alphabet
        (a trimmed stage uses the first columns of its row); None: the model has none."""
        if self.code_counts is None:
            return None
        width = max(self.codec.code_sizes(layout.n_q, layout.envelope, layout.last_codes))
        rows = self.codec.table_rows(layout)
        counts = self.code_counts[rows, :width].copy()
        if layout.last_codes is not None:
            counts[-1, : layout.last_codes] = self._trimmed_counts(rows[-1], layout.last_codes)
        return counts

    def context_tables(self, layout: StreamLayout) -> np.ndarray | None:
        """The context counts `[rows, K, K]` of the rows a stream with `layout` carries (zero for rows coded
        without context: pitch and stages); None: the model has none."""
        if self.context_counts is None or layout.envelope is None:
            return None
        rows = self.codec.table_rows(layout)
        first = self.codec.pitch_rows
        side = [self.context_counts[rows[i] - first] for i in range(layout.pitch_rows, layout.side_rows)]
        k = max(len(c) for c in side)
        out = np.zeros((len(rows), k, k), dtype=np.int64)
        for i, c in enumerate(side, start=layout.pitch_rows):
            out[i, : len(c), : len(c)] = c
        return out

    @functools.cached_property
    def skip_code(self) -> bool:
        """Whether code 0 of every stage is a zero "skip" code (`rotcodec export` adds one)."""
        return has_skip_code(self.codec)

    def _trimmed_counts(self, row: int, codes: int) -> np.ndarray:
        """The counts a stage trimmed to its first `codes` codes is range coded with: its row's first counts;
        with a skip code, that code gets half the table (a trimmed stage skips most frames, where whole
        stages never do) and the other codes share the rest by their counts."""
        assert self.code_counts is not None
        counts = self.code_counts[row, :codes].astype(np.int64)
        if self.skip_code:
            counts[0] = max(1, int(counts[1:].sum()))
        return counts

    def layout_of(self, header: RcqHeader) -> StreamLayout:
        """The layout a stream's header describes, read against this model: its last stage is trimmed when
        its alphabet is smaller than this model's codebook."""
        lay = header.layout
        last = header.codebook_sizes[-1]
        return dataclasses.replace(lay, last_codes=last if last < self.codec.codebook_size else None)

    def describe(self, layout: StreamLayout) -> str:
        """`layout.describe()` with the tier's harmonic phase rows told apart from its band gains."""
        return describe_layout(self.codec.config, layout)

    @property
    def sorted_codes(self) -> bool:
        """Whether every stage lists its codes by falling use in the model's tables (`rotcodec export` sorts
        them; a skip code stays first), so that a trimmed stage keeps its most used codes: plans trim stages
        only then."""
        if self.code_counts is None:
            return False
        stages = self.code_counts[len(self.codec.table_sizes()) - self.n_q :, int(self.skip_code) :]
        return bool(np.all(np.diff(stages, axis=1) <= 0))

    def _trimmed_bits(self, row: int, codes: int) -> float:
        """Expected bits per code of table row `row` trimmed to its first `codes` codes (its entropy)."""
        bits = self._trimmed_code_bits(row, codes)
        return float((np.exp2(-bits) * bits).sum())

    def _trimmed_code_bits(self, row: int, codes: int) -> np.ndarray:
        """What range coding charges for each code of table row `row` trimmed to its first `codes` codes."""
        key = (row, codes)
        if key not in self._trim_cache:
            assert self.code_counts is not None
            table = quantize_counts(self._trimmed_counts(row, codes), codes).astype(np.float64)
            self._trim_cache[key] = -np.log2(table / float(1 << TABLE_BITS))
        return self._trim_cache[key]

    @functools.cached_property
    def _code_bits(self) -> list[np.ndarray]:
        """Per table row (`Codec.table_sizes`), the bits range coding charges for each code: -log2 of its
        probability in the quantized table (entropy coding only)."""
        assert self.code_counts is not None
        scale = float(1 << TABLE_BITS)
        return [
            -np.log2(quantize_counts(self.code_counts[r, :k], k) / scale)
            for r, k in enumerate(self.codec.table_sizes())
        ]

    @functools.cached_property
    def _context_bits(self) -> dict[int, np.ndarray]:
        """Per table row coded with context (`context_tables`), the bits range coding charges for each code
        `[previous code + 1, code]`, row 0 for a chunk's first frame (entropy coding only)."""
        if self.context_counts is None:
            return {}
        assert self.code_counts is not None
        scale = float(1 << TABLE_BITS)
        first = self.codec.pitch_rows
        out = {}
        for i, after in enumerate(self.context_counts):
            r = first + i
            k = len(after)
            if after.any():
                out[r] = -np.log2(context_table(after, self.code_counts[r], k) / scale)
        return out

    @functools.cached_property
    def _row_bits(self) -> np.ndarray:
        """Per table row, the expected bits per code of its quantized table (its entropy; with context, weighted
        by how often each previous code comes), computed once: plans price hundreds of layouts from them."""
        assert self.code_counts is not None
        bits = [expected_bits(self.code_counts[r], k) for r, k in enumerate(self.codec.table_sizes())]
        for r, m in self._context_bits.items():
            prior = np.exp2(-m[0])
            bits[r] = float((prior[:, None] * np.exp2(-m[1:]) * m[1:]).sum())
        return np.array(bits)

    def row_costs(self, x: np.ndarray, sr: int, skip: Sequence[tuple[int, int]] | None = None) -> FileCosts | None:
        """What the model's tables charge for the codes of audio x `[channels, t]` at `sr` Hz (`FileCosts`,
        measured as a plan asks): mean range-coded bits per code of every row for streams of n stages (band
        gains cost more when fewer stages leave the decode further from the input), and of every stage
        trimmed to each of `trim_sizes` (models whose codes are sorted by use), with whether each such trimmed
        stage lowers the latent error. `skip`: (offset, count) spans of x coded but not counted (a probe's
        lead-ins; default: those a `probe_audio` array carries). None without tables."""
        if self.code_counts is None:
            return None
        skip = getattr(x, "skip", ()) if skip is None else skip
        x, skip = resampled_probe(self, np.asarray(x), sr, skip)
        return FileCosts(self, x, skip)

    def overhead_kbps(self, layout: StreamLayout, channels: int, seconds: float) -> float:
        """What the header and chunk records add to a `seconds`-long file's rate (kbps)."""
        size, chunk = self._header_size(layout, channels)
        frames = math.ceil(seconds * self.codec.frame_rate)
        records = math.ceil(frames / chunk) + 1
        return kbps_of(size + RECORD_BYTES * records, seconds)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - models live as long as the process; plans ask hundreds of times
    def _header_size(self, layout: StreamLayout, channels: int) -> tuple[int, int]:
        """(header bytes, frames per chunk) of a stream with `layout` and `channels`."""
        header = self.make_header(self.sample_rate, channels, 0, layout, False)
        return len(pack_header(header, 0)), header.chunk_frames

    def expected_kbps(
        self, layout: StreamLayout, channels: int, seconds: float, entropy: bool | None, costs: FileCosts | None = None
    ) -> float:
        """A `seconds`-long file's expected rate in kbps with `layout`: payload (`bitrate`) plus header and chunk
        records."""
        return self.bitrate(layout, channels, entropy, costs) + self.overhead_kbps(layout, channels, seconds)

    def plan_file(
        self,
        probe: np.ndarray,
        sr: int,
        seconds: float,
        kbps: float | None = None,
        n_q: int | None = None,
        entropy: bool | None = None,
        envelope: bool | None = None,
        costs: FileCosts | None = None,
    ) -> tuple[StreamLayout, float]:
        """`plan` for one file of `seconds` at `sr` Hz, probed by `probe` `[channels, t]` (`probe_audio`: its
        `probe_reads`, joined): with `kbps` and entropy coding, planned from what that audio's codes cost
        (`probe_costs`, or `costs` where the caller has them), header and records included.
        Returns the layout and the whole file's expected rate in kbps (the plan's own figure: from the audio's
        costs where it measured them, else the tables; header and records spread over `seconds`)."""
        if costs is None:
            costs = self.probe_costs(probe, sr, kbps, n_q, entropy)
        channels = probe.shape[0]
        layout = self.plan(kbps, n_q, channels, entropy, envelope, costs, seconds)
        return layout, self.expected_kbps(layout, channels, seconds, entropy, costs)

    def probe_costs(
        self, probe: np.ndarray, sr: int, kbps: float | None, n_q: int | None, entropy: bool | None
    ) -> FileCosts | None:
        """The probe's `row_costs` when a plan prices from them (`kbps`, no `n_q`, entropy coding), else None."""
        if kbps is not None and n_q is None and self.coding_mode(entropy) == CodingMode.ENTROPY:
            return self.row_costs(probe, sr)
        return None

    def replan(
        self,
        costs: FileCosts | None,
        channels: int,
        seconds: float,
        kbps: float | None,
        entropy: bool | None,
        envelope: bool | None,
        first: StreamLayout,
        planned: float,
        streams: list[bytes],
        code: Callable[[StreamLayout], list[bytes]],
    ) -> tuple[StreamLayout, float, list[bytes]] | None:
        """Plans again for a file whose `streams` (`first`, planned at `planned` kbps from the probe's `costs`;
        one per clip of a batch planned together) came out over `kbps`, or more than RATE_SLACK under it: the
        probe priced the file cheaper or dearer than the whole of it costs (band gains vary most from one
        stretch of speech to another). Prices are scaled by what the streams measured; a stream under keeps its
        band-gain tier (the room buys stages, not another tier), one over may take any. `code(layout)` codes
        the audio again. The scale is searched geometrically (stepped on by the measured ratio while every
        stream went over, bisected once one landed under), up to REPLAN_TRIES codings. Returns the (layout,
        expected kbps, streams) that came closest under `kbps`, or None when nothing did better: also for
        files shorter than PROBE_SECONDS (probed whole) and plans not priced from the probe (`costs` None:
        plain coding, `n_q`)."""
        if costs is None or kbps is None or seconds < PROBE_SECONDS:
            return None
        measured = kbps_of(sum(map(len, streams)) / len(streams), seconds)
        went_over = kbps_of(max(map(len, streams)), seconds) > kbps
        if not went_over and measured >= (1 - RATE_SLACK) * kbps:
            return None
        overhead = self.overhead_kbps(first, channels, seconds)
        if not planned - overhead > 0 or not measured - overhead > 0:
            return None
        ratio = (measured - overhead) / (planned - overhead)
        # the scale known to go over (low) and the one known to land under (high, None while unknown)
        low, high = (1.0, None) if went_over else (ratio, 1.0)
        step = max(ratio, 1 + RATE_SLACK)  # how far to go on while every scale tried went over
        best, best_rate, over = None, 0.0 if went_over else measured, {first: went_over}
        scale, codings = ratio, 0
        tier = True if went_over else first.envelope  # the first plan's tier may not fit at all
        for _ in range(4 * REPLAN_TRIES):  # plans are cheap once priced; codings are what is limited
            # the probe's decodes stay cached in `costs` from plan to plan
            layout = self.plan(kbps, None, channels, entropy, envelope, costs, seconds, scale, tier)
            if layout not in over:
                if codings == REPLAN_TRIES:
                    break
                codings += 1
                again = code(layout)
                rate = kbps_of(max(map(len, again)), seconds)
                over[layout] = rate > kbps
                if not over[layout] and rate > best_rate:
                    extra = self.overhead_kbps(layout, channels, seconds)
                    expected = extra + (self.expected_kbps(layout, channels, seconds, entropy, costs) - extra) * scale
                    best, best_rate = (layout, expected, again), rate
                    if rate >= (1 - RATE_SLACK) * kbps:
                        break
            if over[layout]:
                low = scale
            else:
                high = scale
            scale = low * step if high is None else math.sqrt(low * high)
        return best

    def layouts(self, envelope: bool | None = None) -> list[StreamLayout]:
        """Every layout `--kbps` may plan for this model (`envelope` False: none with band gains); a tier comes
        with at least its `min_stages` stages."""
        tiers = [None] if envelope is False else [None, *range(len(self.codec.envelopes))]
        if envelope and len(tiers) > 1:
            tiers = tiers[1:]

        def fewest(t: int | None) -> int:
            return 1 if t is None else min(self.n_q, self.codec.envelopes[t].cfg.min_stages)

        return [self.codec.layout(n, t) for t in tiers for n in range(fewest(t), self.n_q + 1)]

    def plan(
        self,
        kbps: float | None = None,
        n_q: int | None = None,
        channels: int = 1,
        entropy: bool | None = None,
        envelope: bool | None = None,
        costs: FileCosts | None = None,
        seconds: float | None = None,
        scale: float = 1.0,
        tier: int | None | bool = True,
    ) -> StreamLayout:
        """The rows a stream sends, planned once per file (`envelope` False: no band gains; True: always some).
        `tier`: only layouts with this envelope tier (None: without band gains; True: any).
        `costs`: the file's own bits per code (`row_costs`; entropy coding; priced times `scale`), `seconds`: its
        length, so that the header and chunk records count too (spread over at least PROBE_SECONDS: files of 10 s
        or more stay within `kbps`, shorter ones may exceed it by their header); without them the tables'
        entropy and a wider margin plan it.

        - `n_q`: that many stages with envelope tier 0 (the one the decoder was trained with).
        - `kbps`: of the layouts whose expected bitrate (times RATE_MARGIN when entropy-coded) fits, the one
          with the best measured quality in the model's `layout_quality` table (`train/quality_table.py`);
          for models without one, the one whose envelope tier has the highest `priority`, then whose band gains
          cost the most, then the most stages, a tier only with its `min_stages` (on speech16k finer band gains
          and the phase rows buy far more quality per bit than stages past the first few:
          `docs/results/envelope_tiers`, `docs/results/output_phase`). If none fits, the cheapest layout. Then
          one more stage, trimmed to what still fits (`planner.fill`). With `costs`, layouts are priced lazily
          (`planner.search`).
        - neither: all stages and the tier of highest priority, then the costliest: the model's best quality.
        """
        has_envelope = len(self.codec.envelopes) > 0 and envelope is not False
        if n_q is not None:
            if not 1 <= int(n_q) <= self.n_q:
                raise OptionError(f"--n-q must be in 1..{self.n_q} for model {self.name}, got {n_q}")
            return self.codec.layout(int(n_q), 0 if has_envelope else None)
        if kbps is not None and not kbps > 0:
            raise OptionError(f"--kbps must be positive, got {kbps}")
        coded = self.coding_mode(entropy) == CodingMode.ENTROPY
        margin = (PROBE_MARGIN * scale if costs is not None else RATE_MARGIN) if coded else 1.0

        def extra(lay: StreamLayout) -> float:
            # a file shorter than PROBE_SECONDS may exceed --kbps by its header, not by its codes
            return 0.0 if seconds is None else self.overhead_kbps(lay, channels, max(seconds, PROBE_SECONDS))

        def total(lay: StreamLayout) -> float:
            return self.bitrate(lay, channels, entropy, costs) * margin + extra(lay)

        layouts = self.layouts(has_envelope and envelope)
        if tier is not True:  # one envelope tier (or None) only
            layouts = [lay for lay in layouts if lay.envelope == tier]
        if costs is not None and kbps is not None and coded:

            def bound(lay: StreamLayout, m: int) -> float:
                return self.bitrate(lay, channels, entropy, costs, gains_at=m) * margin + extra(lay)

            def by_tables(lay: StreamLayout) -> float:
                return self.bitrate(lay, channels, entropy) * margin + extra(lay)

            guess = self.plan(kbps, None, channels, entropy, envelope, None, seconds)
            best = search(self, layouts, kbps, total, bound, by_tables, costs, entropy, guess)
            return fill(self, best, kbps, total, costs)
        options = [(total(lay), lay) for lay in layouts]
        fits = [(rate, lay) for rate, lay in options if kbps is None or rate <= kbps + 1e-9]
        if not fits:
            return min(options, key=lambda o: o[0])[1]
        best = choose(self, fits, entropy)
        return best if kbps is None else fill(self, best, kbps, total, costs)

    def coding_mode(self, entropy: bool | None = None) -> CodingMode:
        """Plain or entropy coding for the `--entropy` choice (None: entropy if the model has tables)."""
        if entropy and not self.has_entropy_tables:
            raise OptionError(f"model {self.name} has no code-frequency tables; entropy coding is unavailable")
        use = self.has_entropy_tables if entropy is None else entropy
        return CodingMode.ENTROPY if use else CodingMode.PLAIN

    def make_header(
        self, sr: int, channels: int, num_samples: int, layout: StreamLayout, entropy: bool | None
    ) -> RcqHeader:
        """Header for `channels` x `num_samples` audio at `sr` Hz coded with `layout`."""
        chunk = max(1, min(256, (1 << 22) // (channels * layout.rows)))
        return RcqHeader(
            model_id=self.name,
            model_hash=self.fingerprint,
            model_sample_rate=self.sample_rate,
            original_sample_rate=sr,
            channels=channels,
            num_samples=num_samples,
            hop_length=self.hop_length,
            codebook_sizes=self.codec.code_sizes(layout.n_q, layout.envelope, layout.last_codes),
            coding_mode=self.coding_mode(entropy),
            chunk_frames=chunk,
            pitch_rows=layout.pitch_rows,
            envelope_tier=layout.envelope,
            envelope_rows=layout.envelope_rows,
        )

    def check_header(self, header: RcqHeader) -> None:
        """Raise ModelMismatchError unless `header` was written with this model."""
        if header.model_hash != self.fingerprint:
            raise ModelMismatchError(
                f"file was encoded with model {header.model_id!r} ({header.model_hash.hex()[:12]}), "
                f"not with {self.name!r} ({self.fingerprint.hex()[:12]})"
            )

    # -- streaming core -----------------------------------------------------------------------------
    def _model_step(self) -> int:
        return self.hop_length * max(1, round(self.step_seconds * self.sample_rate / self.hop_length))

    @property
    def streams(self) -> bool:
        """Causal models encode/decode block by block with bounded memory; non-causal ones whole files."""
        return bool(self.codec.config.causal)

    @contextlib.contextmanager
    def _streaming(self) -> Iterator[None]:
        """The codec's streaming state for one stream (causal models), with weight norm computed once per
        stream rather than once per model call (~4% of a decode)."""
        with self.codec.streaming() if self.streams else contextlib.nullcontext(), parametrize.cached():
            yield

    def _as_batch(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return t.reshape(-1, self.codec.channels, t.shape[-1])

    def _group_rows(self, channels: int, rows: int) -> int:
        """Rows (audio channels) per model call when `channels` of them fit the budget: at least the model's
        own channel count, a multiple of it, at most `rows`."""
        ch = self.codec.channels
        return min(rows, max(ch, channels // ch * ch))

    def _groups(self, frames: int, rows: int) -> list[tuple[int, int]]:
        """Row ranges [a, b) coded per model call for calls of `frames` frames."""
        per = self._group_rows(self.batch_frames // max(1, frames), rows)
        return [(a, min(rows, a + per)) for a in range(0, rows, per)]

    def _per_group(
        self,
        groups: list[tuple[int, int]],
        states: _GroupStates | None,
        call: Callable[[int, int], torch.Tensor | None],
    ) -> np.ndarray | None:
        """`call(a, b)` (a model output `[batch, channels, ...]` for rows a..b) for every group of rows, each in
        its own streaming state, joined by row -> `[rows, ...]`; None if a call returns None."""
        outs = []
        for g, (a, b) in enumerate(groups):
            with states.use(g) if states else contextlib.nullcontext():
                out = call(a, b)
            if out is None:
                return None
            outs.append(out.reshape(b - a, *out.shape[2:]).cpu().numpy())
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def _check_rows(self, rows: int) -> None:
        if rows % self.codec.channels:
            raise AudioError(f"model {self.name} codes {self.codec.channels} channels at a time, got {rows}")

    def encode_stream(self, blocks: Iterable[np.ndarray], sr: int, rows: int, layout: StreamLayout, sink: Sink) -> None:
        """Encode consecutive float32 blocks [rows, t] at `sr` Hz; `sink` gets int64 codes [rows, code rows,
        frames] (as `Codec.encode`).

        Rows (channels, possibly of several same-length files) are folded into the model's batch.
        Frames equal those of encoding the whole signal at once, whatever the block sizes.
        """
        self._check_rows(rows)
        rs = _resampler(sr, self.sample_rate, rows)
        # Non-causal models cannot stream: they see the whole signal in one call (memory grows with length).
        hop, step = self.hop_length, self._model_step() if self.streams else 1 << 62
        pending = np.zeros((rows, 0), np.float32)
        groups = self._groups(step // hop if self.streams else 1, rows)
        states = _GroupStates(self.codec, len(groups)) if self.streams and len(groups) > 1 else None

        def encode(x: np.ndarray) -> Callable[[int, int], torch.Tensor]:
            return lambda a, b: self.codec.encode(
                self._as_batch(x[a:b]), layout.n_q, layout.envelope, layout.last_codes
            )

        def emit(x: np.ndarray) -> None:
            # a non-causal model sees the whole file at once: only its channels can be split
            split = groups if self.streams else self._groups(max(1, x.shape[1] // hop), rows)
            sink(self._per_group(split, states, encode(x)))

        with self._streaming():
            for block in blocks:
                pending = np.concatenate([pending, _run_resampler(rs, block, last=False)], axis=1)
                usable = pending.shape[1] // step * step
                for start in range(0, usable, step):
                    emit(pending[:, start : start + step])
                pending = pending[:, usable:]
            if rs is not None:
                pending = np.concatenate([pending, _run_resampler(rs, np.zeros((rows, 0), np.float32), True)], 1)
            # The whole-file pass zero-pads to a multiple of hop; doing the same completes the last frame.
            pending = np.pad(pending, ((0, 0), (0, (-pending.shape[1]) % hop)))
            for start in range(0, pending.shape[1], step):
                emit(pending[:, start : start + step])
            if self.streams:  # the frames the pitch tracker's lookahead held back
                tail = self._per_group(groups, states, lambda a, b: self.codec.encode_flush(layout.envelope))
                if tail is not None:
                    sink(tail)

    def _whole_file_codes(self, costs: FileCosts | None, layout: StreamLayout, header: RcqHeader) -> np.ndarray | None:
        """The codes `[channels, code rows, frames]` of the file `header` describes, made from its probe's passes
        (`FileCosts.codes`: the encoder's, and the decode pricing ran for the layout's stages) when `costs`
        priced the whole file; else None, and the file is coded block by block (`encode_stream`). For files of
        up to PROBE_SECONDS, this saves the second encoder pass and usually the decode that measures band
        gains."""
        if costs is None or len(probe_spans(header.num_samples, header.original_sample_rate)) != 1:
            return None
        codes = costs.codes(layout)
        return codes if codes.shape[0] == header.channels and codes.shape[-1] == expected_frames(header) else None

    def decode_stream(self, header: RcqHeader, chunks: Iterable[np.ndarray], sink: Sink) -> None:
        """Decode codes chunks [C, code rows, frames]; `sink` gets float32 audio [C, t] at the original rate,
        exactly `header.num_samples` samples in total."""
        self.check_header(header)
        if header.model_sample_rate != self.sample_rate or header.hop_length != self.hop_length:
            raise ModelMismatchError(f"file's rate/hop do not match model {self.name}")
        lay = self.layout_of(header)
        try:
            fits = self.codec.layout(lay.n_q, lay.envelope, lay.last_codes) == lay
        except ValueError:  # more stages or envelope tiers than the model has
            fits = False
        if not fits:
            raise ModelMismatchError(f"file's rows ({lay.describe()}) do not fit model {self.name}")
        allowed = self.codec.code_sizes(lay.n_q, lay.envelope, lay.last_codes)
        if any(k > a for k, a in zip(header.codebook_sizes, allowed, strict=True)):
            raise ModelMismatchError(f"file uses more stages or codes than model {self.name} has")
        self._check_rows(header.channels)
        channels = header.channels
        rs = _resampler(self.sample_rate, header.original_sample_rate, channels)
        left = header.num_samples
        frames = 0

        def put(y: np.ndarray) -> None:
            nonlocal left
            y = y[:, :left]
            if y.shape[1]:
                left -= y.shape[1]
                sink(np.ascontiguousarray(y, dtype=np.float32))

        if self.streams:
            # pieces of at most a model step, fewer frames when many channels would make one piece's audio large
            frame_bytes = 4 * channels * self.hop_length * max(1.0, header.original_sample_rate / self.sample_rate)
            max_frames = self._model_step() // self.hop_length
            max_frames = max(1, min(max_frames, int(OUT_PIECE_BYTES // frame_bytes)))
            groups = self._groups(max_frames, channels)
        else:  # decode the whole file in one call, as the model was trained
            parts = list(chunks)
            chunks = [np.concatenate(parts, axis=2)] if parts else []
            max_frames = 1 << 62
            groups = self._groups(max(1, sum(p.shape[2] for p in parts)), channels)
        states = _GroupStates(self.codec, len(groups)) if self.streams and len(groups) > 1 else None

        def decode(codes: np.ndarray) -> Callable[[int, int], torch.Tensor]:
            def call(a: int, b: int) -> torch.Tensor:
                t = torch.from_numpy(codes[a:b]).to(self.device)
                return self.codec.decode(t.reshape(-1, self.codec.channels, *t.shape[1:]), lay.envelope)

            return call

        with self._streaming():
            for chunk in chunks:
                frames += chunk.shape[2]
                for start in range(0, chunk.shape[2], max_frames):
                    y = self._per_group(groups, states, decode(chunk[:, :, start : start + max_frames]))
                    assert y is not None
                    put(_run_resampler(rs, y, last=False))
            if self.streams:  # the envelope's last frame
                tail = self._per_group(groups, states, lambda a, b: self.codec.decode_flush())
                if tail is not None:
                    put(_run_resampler(rs, tail, last=False))
            if abs(frames - expected_frames(header)) > 1:
                raise BitstreamError(f"corrupt .rcq stream: {frames} frames, header implies {expected_frames(header)}")
            if rs is not None:
                put(_run_resampler(rs, np.zeros((channels, 0), np.float32), last=True))
        while left > 0:  # rounding in the resampler can leave a few samples short
            put(np.zeros((channels, min(left, 1 << 16)), np.float32))

    # -- bytes API ----------------------------------------------------------------------------------
    def compress(
        self,
        wav: np.ndarray,
        sr: int,
        kbps: float | None = None,
        n_q: int | None = None,
        entropy: bool | None = None,
        envelope: bool | None = None,
        layout: StreamLayout | None = None,
    ) -> bytes:
        """Audio (`audio.as_audio`: [channels, time], [time] or [time, channels]; float or int16/int32 PCM; any rate in
        Hz) -> `.rcq` bytes (`layout`: as `compress_many`)."""
        return self.compress_many([wav], sr, kbps, n_q, entropy, envelope, layout=layout)[0]

    def compress_many(
        self,
        wavs: Sequence[np.ndarray],
        sample_rates: int | Sequence[int],
        kbps: float | None = None,
        n_q: int | None = None,
        entropy: bool | None = None,
        envelope: bool | None = None,
        max_rows: int = 16,
        layout: StreamLayout | None = None,
        priced: FileCosts | None = None,
    ) -> list[bytes]:
        """Compress many clips with one model; clips of equal rate, channels and length are encoded as one
        batch (up to `max_rows` channels in total), which is what makes GPUs pay off. Each stream has `layout`
        (None: `plan_file` from the batch's audio). `priced`: with `layout` and one clip, the `FileCosts` that
        planned that clip (a replan coding it again), whose passes its codes are made from where they cover
        it whole. Returns `.rcq` bytes."""
        rates = [sample_rates] * len(wavs) if isinstance(sample_rates, (int, np.integer)) else list(sample_rates)
        if len(rates) != len(wavs):
            raise AudioError(f"got {len(wavs)} clips but {len(rates)} sample rates")
        clips = [_checked_clip(w, r, f"clip {i}") for i, (w, r) in enumerate(zip(wavs, rates, strict=True))]
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (x, r) in enumerate(clips):
            groups.setdefault((r, x.shape[0], x.shape[1]), []).append(i)
        out: list[bytes] = [b""] * len(clips)
        for (r, c, length), idx in groups.items():
            per = max(1, max_rows // c)
            for g in range(0, len(idx), per):
                part = idx[g : g + per]
                bufs = [io.BytesIO() for _ in part]
                if layout is None:
                    pieces = [probe_audio(clips[i][0], r) for i in part]
                    starts = np.cumsum([0] + [p.shape[1] for p in pieces])
                    skip = [(int(at) + a, n) for p, at in zip(pieces, starts, strict=False) for a, n in p.skip]
                    probe = as_probe(np.concatenate(pieces, axis=1), skip)
                    costs = self.probe_costs(probe, r, kbps, n_q, entropy)
                    q, planned = self.plan_file(probe, r, length / r, kbps, n_q, entropy, envelope, costs)
                else:
                    q = layout
                # one clip priced whole is coded from its probe's passes
                whole = (costs if layout is None else priced) if len(part) == 1 else None
                tables, context = self.tables(q), self.context_tables(q)
                header = self.make_header(r, c, length, q, entropy)
                writers = [RcqWriter(b, header, tables, context) for b in bufs]
                stacked = np.concatenate([clips[i][0] for i in part], axis=0)

                def sink(codes: np.ndarray, writers: list[RcqWriter] = writers, c: int = c) -> None:
                    for k, w in enumerate(writers):
                        w.write_chunk(codes[k * c : (k + 1) * c])

                codes = self._whole_file_codes(whole, q, header)
                if codes is not None:
                    sink(codes)
                else:
                    blocks = _array_blocks(stacked, max(1, int(self.block_seconds * r)))
                    self.encode_stream(blocks, r, stacked.shape[0], q, sink)
                for i, w, b in zip(part, writers, bufs, strict=True):
                    w.close()
                    out[i] = b.getvalue()
                if layout is None:
                    audio = [clips[i][0] for i in part]

                    def code(
                        lay: StreamLayout, audio: list[np.ndarray] = audio, r: int = r, whole: FileCosts | None = whole
                    ) -> list[bytes]:
                        return self.compress_many(audio, r, entropy=entropy, layout=lay, priced=whole)

                    streams = [out[i] for i in part]
                    again = self.replan(costs, c, length / r, kbps, entropy, envelope, q, planned, streams, code)
                    for i, d in zip(part, [] if again is None else again[2], strict=False):
                        out[i] = d
        return out

    def decompress(self, data: bytes | BinaryIO) -> tuple[np.ndarray, int]:
        """`.rcq` bytes (or a seekable binary file) -> (float32 audio [channels, time], sample rate Hz)."""
        reader = self.reader(io.BytesIO(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) else data)
        parts: list[np.ndarray] = []
        self.decode_stream(reader.header, reader, parts.append)
        h = reader.header
        wav = np.concatenate(parts, axis=1) if parts else np.zeros((h.channels, 0), np.float32)
        return wav, h.original_sample_rate

    def reader(self, fileobj: BinaryIO) -> RcqReader:
        """An RcqReader on a seekable `.rcq` stream, after checking it was written with this model (the
        fingerprint is compared first so a wrong model is named as such, not as a table mismatch)."""
        pos = fileobj.tell()
        header = read_header(fileobj.read)[0]
        self.check_header(header)
        fileobj.seek(pos)
        layout = self.layout_of(header)
        return RcqReader(fileobj, self.tables(layout), self.context_tables(layout))

    # -- files ---------------------------------------------------------------------------------------
    def compress_file(
        self,
        src: str | os.PathLike,
        dst: str | os.PathLike,
        kbps: float | None = None,
        n_q: int | None = None,
        entropy: bool | None = None,
        force: bool = False,
        progress: Progress | None = None,
        envelope: bool | None = None,
        layout: StreamLayout | None = None,
    ) -> FileResult:
        """Stream an audio file (or "-" for stdin) into an `.rcq` file (or "-" for stdout), atomically, with
        `layout` (None: `plan_file` from the file's first seconds); the result's header holds the layout.
        `progress(seconds)` is called after each block read."""
        with open_audio(src) as source:
            return self.compress_source(source, src, dst, kbps, n_q, entropy, force, progress, envelope, layout)

    def compress_source(
        self,
        source: AudioSource,
        src: str | os.PathLike,
        dst: str | os.PathLike,
        kbps: float | None = None,
        n_q: int | None = None,
        entropy: bool | None = None,
        force: bool = False,
        progress: Progress | None = None,
        envelope: bool | None = None,
        layout: StreamLayout | None = None,
    ) -> FileResult:
        """`compress_file` for an audio input already open (`open_audio(src)`), e.g. one whose head chose
        the model."""
        seconds = source.frames / source.sr
        costs = None
        if layout is None:
            reads, skip = probe_reads(source.frames, source.sr)
            probe = as_probe(source.excerpts(reads), skip)
            costs = self.probe_costs(probe, source.sr, kbps, n_q, entropy)
            q, planned = self.plan_file(probe, source.sr, seconds, kbps, n_q, entropy, envelope, costs)
        else:
            q = layout
            planned = self.expected_kbps(q, source.channels, seconds, entropy)

        def encode(q: StreamLayout, out: BinaryIO, report: Progress | None) -> RcqHeader:
            header = self.make_header(source.sr, source.channels, source.frames, q, entropy)
            out.seek(0)
            out.truncate()
            with RcqWriter(out, header, self.tables(q), self.context_tables(q)) as writer:
                codes = self._whole_file_codes(costs, q, header)
                if codes is not None:
                    writer.write_chunk(codes)
                    if report:
                        report(seconds)
                else:
                    blocks = source.blocks(max(1, int(self.block_seconds * source.sr)), report)
                    self.encode_stream(blocks, source.sr, source.channels, q, writer.write_chunk)
            return header

        with atomic_output(dst, force, src) as out:
            header = encode(q, out, progress)
            size = out.seek(0, io.SEEK_END)
            if costs is not None:
                out.seek(0)

                def code(lay: StreamLayout) -> list[bytes]:
                    buf = io.BytesIO()
                    encode(lay, buf, None)
                    return [buf.getvalue()]

                first = [out.read()]
                again = self.replan(costs, source.channels, seconds, kbps, entropy, envelope, q, planned, first, code)
                if again is not None:
                    q, planned, (data,) = again
                    header = self.make_header(source.sr, source.channels, source.frames, q, entropy)
                    out.seek(0)
                    out.truncate()
                    size = out.write(data)
        return FileResult(os.fspath(src), os.fspath(dst), header, size, planned)

    def decompress_file(
        self,
        src: str | os.PathLike | BinaryIO,
        dst: str | os.PathLike,
        format: str = "wav",
        force: bool = False,
        progress: Progress | None = None,
    ) -> FileResult:
        """Stream an `.rcq` file (path, "-" for stdin, or seekable binary file) into a WAV/FLAC file (or "-"
        for stdout), atomically, at the original rate, channel count and length; 16-bit PCM clipped to
        [-1, 1]. `progress(seconds)` is called after each decoded piece."""
        fmt = {"wav": "WAV", "flac": "FLAC"}.get(str(format).lower())
        if fmt is None:
            raise OptionError(f"unsupported output format {format!r}; choose wav or flac")
        with open_rcq(src) as f:
            reader = self.reader(f)
            h = reader.header
            with atomic_output(dst, force, src if isinstance(src, (str, os.PathLike)) else None) as out:
                with sf.SoundFile(out, "w", h.original_sample_rate, h.channels, "PCM_16", format=fmt) as snd:

                    def sink(y: np.ndarray) -> None:
                        snd.write(np.clip(y, -1.0, 1.0).T)
                        if progress:
                            progress(y.shape[1] / h.original_sample_rate)

                    self.decode_stream(h, reader, sink)
                size = out.seek(0, io.SEEK_END)
        return FileResult(os.fspath(src) if isinstance(src, (str, os.PathLike)) else "-", os.fspath(dst), h, size)


class _GroupStates:
    """Separate streaming state per group of channels: the codec's streaming modules keep one state dict each,
    swapped in while a group is coded, so groups of a stream can be coded one after another."""

    def __init__(self, codec: torch.nn.Module, groups: int) -> None:
        self.modules = codec._streaming_modules()
        self.states: list[list[dict]] = [[{} for _ in self.modules] for _ in range(groups)]

    @contextlib.contextmanager
    def use(self, group: int) -> Iterator[None]:
        for m, state in zip(self.modules, self.states[group], strict=True):
            m._streaming_state = state
        try:
            yield
        finally:  # a module may have replaced its dict
            self.states[group] = [{k: _compact(v) for k, v in m._streaming_state.items()} for m in self.modules]


def _compact(value: object) -> object:
    """A state tensor that is a view into a larger one (convs keep a slice of their input) as a copy of its own:
    kept for a group while others run, the view would pin that group's whole activation."""
    if torch.is_tensor(value) and value.untyped_storage().nbytes() > value.numel() * value.element_size():
        return value.clone()
    return value


def _checked_clip(wav: np.ndarray, sr: int, name: str) -> tuple[np.ndarray, int]:
    x = as_audio(wav, name)
    sr = check_sample_rate(sr, f"{name}: sample rate")
    if x.shape[1] == 0:
        raise AudioError(f"{name}: contains no audio samples (zero length)")
    check_finite(x, name)
    over = int(np.count_nonzero(np.abs(x) > 1.0))
    if over:  # coded as given; the decoder's output is clipped to [-1, 1]
        peak = float(np.max(np.abs(x)))
        warnings.warn(
            f"{name}: {over} of {x.size} samples lie beyond ±1 (peak {peak:.6g}; clipping input?)", stacklevel=4
        )
    return x, sr


def _array_blocks(x: np.ndarray, block: int) -> Iterator[np.ndarray]:
    for start in range(0, x.shape[1], block):
        yield x[:, start : start + block]
