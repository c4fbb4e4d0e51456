"""`rotcodec eval`: score a rotcodec model and classic codecs on real files at several bitrates.

For every file x codec x setting: encode through the real bitstream (rotcodec: a whole `.rcq` stream;
baselines: their command-line tools), decode, align, score with `rotcodec.eval.metrics` and time both
directions. For the codec-level diagnosis (`rotcodec.eval.diagnosis`) the model can also be run at every
stage count (`stage_sweep`, with and without its envelope rows) and with its quantizer bypassed (`ceiling`).
Files are read once, mixed to the model's channel count and resampled to its rate (16 kHz mono for the
speech models); the classic codecs get exactly the same reference. Rows already in
`OUT/results.csv` (keyed on file, codec, setting) are not recomputed, so an interrupted run resumes; rows
that lack a metric this version computes (written before it existed) are computed again.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rotcodec.audio import AudioError, load_audio, resample, to_channels
from rotcodec.data.manifest import ManifestError, find_audio
from rotcodec.eval.align import correlation_peak
from rotcodec.eval.baselines import BaselineInputError, get_baseline
from rotcodec.eval.codecs import EvalError, NeuralCodec, run_baseline
from rotcodec.eval.diagnosis import Ceiling, diagnosis_markdown
from rotcodec.eval.metrics import MetricWarning, evaluate, metric_names
from rotcodec.eval.report import plot_quality_vs_bitrate, read_csv, summary_markdown, write_csv

if TYPE_CHECKING:
    from rotcodec.bitstream.layout import StreamLayout
    from rotcodec.eval.codecs import RateTarget

DEFAULT_KBPS = (1.5, 3.0, 6.0, 12.0)
ENVELOPE_CHOICES: dict[str, tuple[int | None, ...]] = {"on": (0,), "off": (None,), "both": (0, None)}
CSV_FLUSH_SECONDS = 5.0  # results.csv is rewritten at most this often (and at the end)


def parse_baseline_kbps(items: Sequence[str]) -> dict[str, list[float]]:
    """`["opus=6,8,12", "codec2=3.2"]` -> `{"opus": [6, 8, 12], "codec2": [3.2]}` (kbps)."""
    out: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip().lower()] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise EvalError(f"--baseline-kbps expects NAME=KBPS[,KBPS...], got {item!r}") from None
    return out


def find_eval_files(data: str | Path, max_files: int | None = None, split: str | None = None) -> list[str]:
    """Audio paths under a folder, in a manifest, a glob or one file (sorted, at most `max_files`); `split`:
    only a manifest's files of that split (train, valid, test)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            entries = find_audio([str(data)])
    except ManifestError as exc:
        raise EvalError(f"--data: {exc}") from None
    if split is not None:
        entries = [e for e in entries if e.split == split]
        if not entries:
            raise EvalError(f"--data: no files of split {split!r} in {data} (splits come from a manifest)")
    if not entries:
        raise EvalError(f"--data: no audio files found in {data}")
    paths = sorted(dict.fromkeys(e.path for e in entries))
    return paths[:max_files] if max_files else paths


def load_reference(path: str, sr: int, channels: int, max_seconds: float | None = None) -> np.ndarray:
    """A file as float32 `[channels, time]` at `sr` Hz (mixed/duplicated to `channels`), optionally cut."""
    wav, file_sr = load_audio(path)
    wav = resample(to_channels(wav, channels), file_sr, sr)
    if max_seconds:
        wav = wav[:, : int(round(max_seconds * sr))]
    return np.ascontiguousarray(wav, dtype=np.float32)


def align_estimate(ref: np.ndarray, est: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """Shift `est` by the cross-correlation lag (within ±max_lag) when the peak is clear (height >= 0.5)."""
    lag, height = correlation_peak(ref, est, max_lag)
    if lag == 0 or height < 0.5:
        return est, 0
    out = np.zeros_like(est)
    if lag > 0:
        out[:, : est.shape[-1] - lag] = est[:, lag:]
    else:
        out[:, -lag:] = est[:, :lag]
    return out, lag


def score(ref: np.ndarray, est: np.ndarray, sr: int, speech: bool, dnsmos: bool) -> dict[str, Any]:
    """Metric columns for one decoded file; NaN reasons go to a `notes` string."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        report = evaluate(ref, est, sr, speech=speech, with_dnsmos=dnsmos)
    notes = "; ".join(f"{k}: {v}" for k, v in report.notes.items() if k != "length")
    return {**report.values, "notes": notes}


@dataclass
class EvalOptions:
    """Settings of one evaluation. kbps: rotcodec nominal bitrates; n_q: stage counts instead of kbps
    (used by the ablation); stage_sweep: every stage count 1..N instead of kbps (or those in n_q);
    envelope: for the stage counts and the ceiling, "on" (send the envelope rows, for models that have
    them), "off" or "both" (a row for each); envelope_tiers: for the stage counts, these envelope tiers'
    band gains instead (one row each); ceiling: also the quantizer-bypassed decode (no bitrate);
    baseline_kbps: per baseline the nominal kbps (defaults below)."""

    model: str | Path | None
    data: str | Path | None
    out: str | Path
    kbps: Sequence[float] = DEFAULT_KBPS
    n_q: Sequence[int] | None = None
    stage_sweep: bool = False
    envelope: str = "on"
    envelope_tiers: Sequence[int] | None = None
    ceiling: bool = False
    baselines: Sequence[str] = ()
    baseline_kbps: dict[str, list[float]] = field(default_factory=dict)
    max_files: int | None = None
    split: str | None = None
    max_seconds: float | None = None
    speech: bool = True
    dnsmos: bool = False
    name: str = "rotcodec"
    quiet: bool = False
    sample_rate: int = 16000  # used only without a model
    channels: int = 1
    items: Sequence[tuple[str, np.ndarray]] | None = None  # in-memory references, instead of `data`


BASELINE_DEFAULT_KBPS = {"opus": [6.0, 8.0, 12.0], "codec2": [3.2, 1.6], "mp3": [8.0, 16.0]}


@dataclass
class EvalOutcome:
    """All rows in results.csv after the run, and how many were computed by this call."""

    rows: list[dict[str, Any]]
    computed: int
    out: Path


Job = tuple[str, str, float, "StreamLayout | RateTarget | Ceiling | None"]


def _jobs(opts: EvalOptions, neural: NeuralCodec | None) -> list[Job]:
    """(codec, setting label, nominal kbps, rotcodec `StreamLayout` or `RateTarget`, `Ceiling` or None) for
    every codec and setting (the ceiling's nominal kbps is NaN)."""
    if opts.envelope not in ENVELOPE_CHOICES:
        raise EvalError(f"envelope must be one of {', '.join(ENVELOPE_CHOICES)}, got {opts.envelope!r}")
    envelope = ENVELOPE_CHOICES[opts.envelope]
    jobs: list[Job] = []
    if neural is not None:
        if opts.n_q or opts.stage_sweep:
            settings = neural.settings_for_n_q(opts.n_q, tuple(opts.envelope_tiers or envelope))
        else:
            settings = neural.settings_for_kbps(opts.kbps)
        jobs += [(neural.name, s, k, n) for s, k, n in settings]
        if opts.ceiling:
            jobs += [(neural.name, s, k, c) for s, k, c in neural.ceilings(envelope)]
    elif opts.ceiling or opts.stage_sweep:
        raise EvalError("the stage sweep and the ceiling need a model (--model)")
    for name in opts.baselines:
        codec = get_baseline(name)
        codec.require()  # missing tool: MissingEncoderError naming the Debian package, before any work
        for k in opts.baseline_kbps.get(codec.name, BASELINE_DEFAULT_KBPS.get(codec.name, list(codec.bitrates))):
            codec.check_kbps(k)
            jobs.append((codec.name, f"{k:g}", float(k), None))
    return jobs


def run_eval(opts: EvalOptions, on_row: Callable[[dict[str, Any]], None] | None = None) -> EvalOutcome:
    """Evaluate, write OUT/results.csv, OUT/summary.md and OUT/quality_vs_bitrate.png; see module doc."""
    from tqdm import tqdm

    out = Path(opts.out)
    neural = NeuralCodec(opts.model, opts.name) if opts.model is not None else None
    sr = neural.sample_rate if neural else opts.sample_rate
    channels = neural.channels if neural else opts.channels
    try:
        jobs = _jobs(opts, neural)
    except BaselineInputError as exc:
        raise EvalError(str(exc)) from None
    if not jobs:
        raise EvalError("nothing to evaluate: give --model and/or --baselines")
    sources = _sources(opts)
    rows = _previous_rows(out / "results.csv", metric_names(opts.speech))
    done = {(r["file"], r["codec"], r["setting"]) for r in rows}
    todo = [(f, j) for f, _ in sources for j in jobs if (f, j[0], j[1]) not in done]
    computed, last_flush = 0, time.monotonic()
    quiet = opts.quiet or not sys.stderr.isatty()  # no bar in redirected logs
    bar = tqdm(total=len(todo), disable=quiet, unit="run", dynamic_ncols=True, desc="eval")
    try:
        for key, source in sources:
            pending = [j for f, j in todo if f == key]
            if not pending:
                continue
            try:
                ref = _reference(source, sr, channels, opts.max_seconds)
            except AudioError as exc:
                bar.write(f"skipping {key}: {exc}")
                bar.update(len(pending))
                continue
            for codec, setting, nominal, spec in pending:
                bar.set_postfix_str(f"{codec} {setting}")
                row = {"file": key, **_run_job(neural, codec, setting, nominal, spec, ref, sr)}
                row.update(score(ref, row.pop("_decoded"), sr, opts.speech, opts.dnsmos))
                rows.append(row)
                computed += 1
                if on_row is not None:
                    on_row(row)
                bar.update(1)
                if time.monotonic() - last_flush > CSV_FLUSH_SECONDS:
                    write_csv(rows, out / "results.csv")
                    last_flush = time.monotonic()
    finally:
        bar.close()
        if computed:
            write_csv(rows, out / "results.csv")
    if not rows:
        raise EvalError("no file could be evaluated")
    write_report(rows, out)
    return EvalOutcome(rows, computed, out)


def _sources(opts: EvalOptions) -> list[tuple[str, Any]]:
    """(key, path or `[channels, time]` array) per evaluation item."""
    if opts.items is not None:
        return list(opts.items)[: opts.max_files or None]
    if opts.data is not None:
        return [(p, p) for p in find_eval_files(opts.data, opts.max_files, opts.split)]
    raise EvalError("no evaluation data given (--data)")


def _previous_rows(csv_path: Path, needed: Sequence[str]) -> list[dict[str, Any]]:
    """Rows an earlier run left in results.csv, minus those that lack a metric now scored (recomputed)."""
    rows: list[dict[str, Any]] = read_csv(csv_path)
    stale = [r for r in rows if any(m not in r for m in needed)]
    if stale:
        missing = sorted({m for r in stale for m in needed if m not in r})
        print(f"{len(stale)} row(s) in {csv_path} lack {', '.join(missing)}: computing them again")
    return [r for r in rows if all(m in r for m in needed)]


def _reference(source: Any, sr: int, channels: int, max_seconds: float | None) -> np.ndarray:
    """The reference `[channels, time]` float32 at `sr` Hz from a path or an array (AudioError if unreadable)."""
    if not isinstance(source, np.ndarray):
        return load_reference(source, sr, channels, max_seconds)
    ref = np.ascontiguousarray(to_channels(source, channels), dtype=np.float32)
    return ref[:, : int(round(max_seconds * sr))] if max_seconds else ref


def _run_job(
    neural: NeuralCodec | None, codec: str, setting: str, nominal: float, spec: Any, ref: np.ndarray, sr: int
) -> dict[str, Any]:
    """Code `ref` with one codec setting -> its results row without the file and the metrics; the decoded
    audio (aligned to `ref`) under `_decoded`."""
    seconds = ref.shape[-1] / sr
    if spec is not None and neural is not None:
        run = neural.run_ceiling(ref, spec) if isinstance(spec, Ceiling) else neural.run(ref, spec)
        decoded, delay = align_estimate(ref, run.decoded, neural.codec.hop_length)
    else:
        run = run_baseline(codec, ref, sr, nominal)
        decoded, delay = run.decoded, 0
    return {
        "codec": codec,
        "setting": setting,
        "nominal_kbps": nominal,
        "n_q": "",  # rotcodec runs say how many stages their stream sent
        "kbps_measured": run.kbps_measured,
        "kbps_file": run.kbps_file,
        "bytes": "" if run.n_bytes is None else run.n_bytes,
        "duration_s": seconds,
        "encode_seconds": run.encode_seconds,
        "decode_seconds": run.decode_seconds,
        "encode_rtf": run.encode_seconds / seconds,
        "decode_rtf": run.decode_seconds / seconds,
        "delay_samples": delay,
        **run.extra,
        "_decoded": decoded,
    }


def write_report(rows: Sequence[dict[str, Any]], out: str | Path) -> None:
    """OUT/summary.md (with the diagnosis section when there are sweep or ceiling rows) and
    OUT/quality_vs_bitrate.png from result rows."""
    from rotcodec.eval.report import atomic_write_text

    out = Path(out)
    diagnosis = diagnosis_markdown(rows)
    atomic_write_text(out / "summary.md", summary_markdown(rows) + ("\n" + diagnosis if diagnosis else ""))
    plot_quality_vs_bitrate(rows, out / "quality_vs_bitrate.png")
