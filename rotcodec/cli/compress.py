"""`rotcodec compress | decompress | info | models`: files, folders and stdin/stdout to `.rcq` and back.

Inputs may be files, folders (searched recursively; the tree is mirrored under `-o`) or `-` (stdin, output
to stdout unless `-o` names a file). Without `-o`, outputs are written next to their inputs. One file that
fails is reported on stderr (one line) and the others still run; the exit code is then 1. Exit codes:
0 success, 1 bad input or runtime error, 2 usage error, 130 interrupted (Ctrl-C or SIGTERM). Outputs appear
only when complete (temp file + rename); existing outputs are kept unless `--force`, also against a concurrent
writer; two inputs that would write one output are refused before anything runs; inputs are never modified.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import (
    EXIT_ERROR,
    EXIT_OK,
    HelpFormatter,
    UsageError,
    add_threads_option,
    positive_float,
    positive_int,
    use_threads,
)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".w64", ".caf"}
Job = tuple[str, str | None, str | None]  # (input, output, error found while planning)

EXIT_HELP = "exit codes: 0 ok, 1 bad input or runtime error, 2 usage error, 130 interrupted"


def _device(text: str) -> str:
    if text == "cpu" or text == "cuda" or text.startswith("cuda:"):
        return text
    raise argparse.ArgumentTypeError(f"device must be cpu, cuda or cuda:N, got {text!r}")


def _add_common(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("-o", "--output", metavar="OUT", help="output file, folder (several inputs), or - for stdout")
    p.add_argument("--model", metavar="NAME_OR_PATH", help=model_help)
    p.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-file summary")
    add_threads_option(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the compress, decompress, info and models subcommands."""
    p = subparsers.add_parser(
        "compress",
        formatter_class=HelpFormatter,
        help="audio files -> .rcq",
        description="Compress audio (any format soundfile reads, any sample rate, any channel count) to .rcq. "
        "IN may be files, folders (recursed; the tree is mirrored under -o) or - (stdin -> stdout). Without -o, "
        "X.wav becomes X.rcq beside it. Prints the rows sent and the requested, planned (what the plan expected "
        "from 10 s of the file spread over its length, header included) and measured (file size) bitrate.",
        epilog=EXIT_HELP,
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio file, folder, or - for stdin")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument(
        "--kbps",
        type=positive_float,
        help="most kbps for the whole file, all channels together (a ceiling for files of 10 s or more); without "
        "--kbps or --n-q: every stage and the finest band gains, the model's highest rate",
    )
    rate.add_argument(
        "--n-q",
        type=positive_int,
        dest="n_q",
        metavar="N",
        help="number of RVQ stages, with the band gains the decoder was trained with",
    )
    _add_common(
        p,
        "model name (see rotcodec models) or a path such as ./NAME (default: chosen per file by content, "
        "speech16k for speech and music24k for music; see rotcodec detect)",
    )
    p.add_argument(
        "--entropy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="range-code the codes (default: on when the model ships code-frequency tables)",
    )
    p.add_argument(
        "--envelope",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send band-energy corrections (default: for models that have them, the finest envelope tier that "
        "--kbps leaves room for; --no-envelope: none)",
    )
    p.set_defaults(func=run_compress)

    p = subparsers.add_parser(
        "decompress",
        formatter_class=HelpFormatter,
        help=".rcq -> audio files",
        description="Decompress .rcq files to WAV/FLAC at the original sample rate, channel count and length. "
        "IN may be files, folders (recursed, mirrored under -o) or - (stdin -> stdout).",
        epilog=EXIT_HELP,
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help=".rcq file, folder, or - for stdin")
    p.add_argument("--format", choices=["wav", "flac"], help="output format (default: from -o suffix, else wav)")
    _add_common(p, "model name or path (default: the installed model matching the file's fingerprint)")
    p.set_defaults(func=run_decompress)

    p = subparsers.add_parser(
        "info",
        formatter_class=HelpFormatter,
        help="show an .rcq file's header",
        description="Header fields, duration, plain-packed and measured bitrate and the model of .rcq files. "
        "Every chunk's CRC and payload is checked too (entropy-coded payloads with the installed model's "
        "tables); a corrupt body is an error.",
        epilog=EXIT_HELP,
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help=".rcq file")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--no-check", dest="check", action="store_false", help="read the header only (fast; the body is not checked)"
    )
    p.set_defaults(func=run_info)

    p = subparsers.add_parser(
        "models",
        formatter_class=HelpFormatter,
        help="list bundled and local models",
        description="List the models a bare name can resolve to: bundled, then $ROTCODEC_MODELS folders, then "
        "~/.cache/rotcodec (never the current directory: pass a path such as ./NAME for a local file).",
        epilog=EXIT_HELP,
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run_models)


# -- planning ----------------------------------------------------------------------------------------
def plan_jobs(inputs: list[str], output: str | None, suffixes: set[str], out_suffix: str) -> list[Job]:
    """Map inputs to outputs. Several inputs or a folder make `-o` a folder (the tree is mirrored)."""
    if "-" in inputs:
        if len(inputs) > 1:
            raise UsageError("'-' (stdin) cannot be combined with other inputs")
        return [("-", output or "-", None)]
    several = len(inputs) > 1 or any(Path(i).is_dir() for i in inputs)
    if output == "-" and several:
        raise UsageError("-o - (stdout) takes exactly one input file")
    out_dir: Path | None = None
    if output and output != "-" and (several or Path(output).is_dir() or output.endswith(("/", os.sep))):
        out_dir = Path(output)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"-o {output} must be a folder when there are several inputs or a folder input")
        if not out_dir.exists() and out_dir.suffix.lower() in AUDIO_SUFFIXES | {".rcq", out_suffix} and several:
            # `-o out.rcq` with two inputs would otherwise create a folder named out.rcq
            raise UsageError(f"-o {output} names a file, but there are several inputs: give a folder (e.g. -o out/)")
    jobs: list[Job] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                jobs.append((name, None, f"{name}: folder holds no {'/'.join(sorted(suffixes))} files"))
            for f in found:
                rel = f.relative_to(path)
                jobs.append((str(f), str((out_dir / rel if out_dir else f).with_suffix(out_suffix)), None))
        elif out_dir is not None:
            jobs.append((name, str(out_dir / (path.stem + out_suffix)), None))
        else:
            jobs.append((name, output or str(path.with_suffix(out_suffix)), None))
    _check_distinct(jobs)
    return jobs


def _check_distinct(jobs: list[Job]) -> None:
    """UsageError if two inputs map to one output (x.wav and x.flac -> x.rcq): one would silently replace the
    other, so nothing is written."""
    seen: dict[str, str] = {}
    for src, dst, _ in jobs:
        if dst is None or dst == "-":
            continue
        key = os.path.normcase(os.path.realpath(dst))
        if key in seen:
            raise UsageError(
                f"{seen[key]} and {src} would both be written to {dst}; give them different names or run them "
                "separately with different -o"
            )
        seen[key] = src


# -- running -----------------------------------------------------------------------------------------
def _say(args: argparse.Namespace, dst: str | None, text: str) -> None:
    if not args.quiet:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr if dst == "-" else sys.stdout)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def _advance(bar: Any) -> Callable[[float], None]:
    """bar.update, stopping at the bar's total: sums of float seconds can pass it, and tqdm then warns
    (TqdmWarning) and shows a negative time left."""

    def update(seconds: float) -> None:
        step = min(seconds, (bar.total or 0) - bar.n)
        if step > 0:
            bar.update(step)

    return update


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def _run_jobs(args: argparse.Namespace, jobs: list[Job], work: Callable[..., str], size_of: Callable) -> int:
    """Run work(src, dst, bar) for every job; per-file errors are printed and the rest continue."""
    from tqdm import tqdm

    failed = 0
    disable = bool(args.quiet) or not _is_terminal(sys.stderr)  # bars only on a terminal, never in a log
    with tqdm(jobs, unit="file", disable=disable or len(jobs) < 2, leave=False, file=sys.stderr) as files:
        for src, dst, error in files:
            try:
                if error:
                    raise ValueError(error)
                assert dst is not None
                if dst != "-" and not Path(dst).parent.is_dir():
                    try:
                        Path(dst).parent.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise ValueError(f"{dst}: cannot create its folder ({exc.strerror})") from None
                seconds = size_of(src)
                quiet_bar = disable or seconds < 30  # bars for long files only
                with tqdm(total=seconds, unit="s", disable=quiet_bar, leave=False, file=sys.stderr) as bar:
                    _say(args, dst, work(src, dst, _advance(bar)))
            except UsageError:
                raise
            except (ValueError, OSError, MemoryError, RuntimeError) as exc:
                from .main import _one_line, _raised_by_interrupt

                if _raised_by_interrupt(exc):  # a clean-up failed on the way out: stop as interrupted
                    raise KeyboardInterrupt from exc
                if isinstance(exc, RuntimeError) and not _out_of_memory(exc):
                    raise
                failed += 1
                msg = "out of memory" if isinstance(exc, (MemoryError, RuntimeError)) else _one_line(exc)
                msg = msg if src in msg or (dst or "?") in msg else f"{src}: {msg}"
                print(f"rotcodec {args.command}: error: {msg}", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def _load(args: argparse.Namespace, name: str | None) -> Any:
    from ..inference import load_model

    return load_model(name, device=args.device)


def run_compress(args: argparse.Namespace) -> int:
    import soundfile as sf

    from ..audio import UNKNOWN_FRAMES
    from ..inference import OptionError
    from ..inference.content import SECONDS, ContentClassifier, ContentUncertain
    from ..inference.files import open_audio
    from ..inference.pricing import PROBE_SECONDS
    from ..pretrained import CHOOSE_MODEL_HINT, MODEL_FOR

    jobs = plan_jobs(args.inputs, args.output, AUDIO_SUFFIXES, ".rcq")
    use_threads(args.threads)
    models: dict[str, Any] = {}

    def model_named(name: str) -> Any:
        if name not in models:
            models[name] = model = _load(args, name)
            try:
                model.coding_mode(args.entropy)
                model.plan(args.kbps, args.n_q, 1, args.entropy, args.envelope)  # option errors before any file
            except OptionError as exc:
                raise UsageError(str(exc)) from None
        return models[name]

    model_named(args.model or MODEL_FOR["speech"])
    rule = None if args.model else ContentClassifier.load()

    def choose(source: Any) -> Any:
        if rule is None:
            return model_named(args.model)
        try:
            kind, _ = rule.classify(source.head(int(SECONDS * source.sr)), source.sr)
        except ContentUncertain as exc:
            raise ValueError(f"{exc}: pass {CHOOSE_MODEL_HINT}") from None
        return model_named(MODEL_FOR[kind])

    def seconds(src: str) -> float:
        if not Path(src).is_file():  # a FIFO would block here; the real open reports it
            return 0.0
        try:
            info = sf.info(src)
            return info.frames / info.samplerate if info.frames < UNKNOWN_FRAMES else 0.0
        except Exception:  # the real open reports the problem
            return 0.0

    band_noted = False

    def work(src: str, dst: str, progress: Callable[[float], None]) -> str:
        nonlocal band_noted
        with open_audio(src) as source:
            model = choose(source)
            r = model.compress_source(
                source, src, dst, args.kbps, args.n_q, args.entropy, args.force, progress, args.envelope
            )
        h, lay = r.header, model.layout_of(r.header)  # planned from 10 s spread over the file
        mode = "entropy" if h.coding_mode else "plain"
        note = ""
        lowest = min(model.bitrate(o, h.channels, bool(h.coding_mode)) for o in model.layouts())
        if args.kbps is not None and lowest > args.kbps + 1e-9:
            note = f" (warning: {args.kbps:g} kbps is below this model's lowest rate)"
        elif args.kbps is not None and r.kbps > args.kbps + 1e-9:
            short = r.duration < PROBE_SECONDS
            why = "a file this short pays for its header" if short else "replanning did not bring it under"
            note = f" (warning: more than the {args.kbps:g} kbps asked: {why})"
        if h.original_sample_rate > h.model_sample_rate and not band_noted and not args.quiet:
            band_noted = True  # once per run: every such file loses the same band
            print(
                f"rotcodec compress: note: model {model.name} codes {h.model_sample_rate} Hz audio: content above "
                f"{h.model_sample_rate / 2000:g} kHz in {h.original_sample_rate} Hz input is not kept (decompress "
                "restores the rate, not the band)",
                file=sys.stderr,
            )
        stages = model.describe(lay)
        requested = "" if args.kbps is None else f"requested {args.kbps:g} kbps, "
        return (
            f"{src} -> {dst}: {r.duration:.2f} s, {h.original_sample_rate} Hz, {h.channels} ch, {model.name}, "
            f"{stages}, "
            f"{requested}planned {r.planned_kbps:.2f} kbps, "
            f"measured {r.kbps:.2f} kbps ({r.size} bytes, {mode}){note}"
        )

    return _run_jobs(args, jobs, work, lambda s: 0.0 if s == "-" else seconds(s))


def run_decompress(args: argparse.Namespace) -> int:
    from ..bitstream.header import escape_text
    from ..inference import decompress_file, read_rcq_header

    out_fmt = args.format or ("flac" if (args.output or "").lower().endswith(".flac") else "wav")
    jobs = plan_jobs(args.inputs, args.output, {".rcq"}, "." + out_fmt)
    use_threads(args.threads)
    fixed = _load(args, args.model) if args.model else None

    def seconds(src: str) -> float:
        try:
            h = read_rcq_header(src)
            return h.num_samples / h.original_sample_rate
        except Exception:
            return 0.0

    def work(src: str, dst: str, progress: Callable[[float], None]) -> str:
        r = decompress_file(src, dst, fixed, out_fmt, args.force, progress, args.device)
        h = r.header
        audio = f"{r.duration:.2f} s, {h.original_sample_rate} Hz, {h.channels} ch"
        return f"{src} -> {dst}: {audio} ({escape_text(h.model_id)})"

    return _run_jobs(args, jobs, work, lambda s: 0.0 if s == "-" else seconds(s))


def check_body(path: str, header: Any, installed: str | None) -> str:
    """Read every chunk of an `.rcq` file, checking its CRC, payload and the frame count (BitstreamError if
    corrupt). Entropy-coded payloads need the model's tables: without the model only plain files are checked.
    Returns what was checked."""
    from ..bitstream import BitstreamError, CodingMode, RcqReader
    from ..inference.files import open_rcq
    from ..inference.model import expected_frames

    if installed is None and header.coding_mode != CodingMode.PLAIN:
        return "not checked (entropy-coded payloads need the model's tables; model not installed)"
    with open_rcq(path) as f:
        if installed is None:
            reader = RcqReader(f)
        else:
            from ..inference import load_model

            reader = load_model(installed).reader(f)
        chunks = frames = 0
        for codes in reader:
            chunks += 1
            frames += codes.shape[2]
    if abs(frames - expected_frames(header)) > 1:  # as decoding checks it
        raise BitstreamError(f"corrupt .rcq stream: {frames} frames, header implies {expected_frames(header)}")
    return f"ok ({chunks} chunks, {frames} frames checked)"


def rcq_info(path: str, check: bool = True) -> dict[str, Any]:
    """Header fields of an `.rcq` file plus duration, plain-packed/measured kbps and the installed model; with `check`,
    the body is read and checked too (`check_body`; BitstreamError if corrupt)."""
    from ..config import from_dict
    from ..inference import read_rcq_header
    from ..inference.files import kbps_of
    from ..inference.model import describe_layout
    from ..models.codec import CodecConfig
    from ..pretrained import find_by_fingerprint

    h = read_rcq_header(path)
    with open(path, "rb") as f:
        version = f.read(5)[4]
    size = os.path.getsize(path)
    duration = h.num_samples / h.original_sample_rate
    entry = find_by_fingerprint(h.model_hash, h.model_id)
    installed = str(entry.weights_path) if entry else None
    body = check_body(path, h, installed) if check else "not checked (--no-check)"
    # the installed model's config tells a phase tier's rows from its band gains; the header alone cannot
    layout = describe_layout(from_dict(CodecConfig, entry.meta["config"]), h.layout) if entry else h.layout.describe()
    return {
        "file": path,
        "format_version": version,
        "model_id": h.model_id,
        "model_hash": h.model_hash.hex(),
        "model_installed": str(entry.weights_path) if entry else None,
        "coding": "entropy" if h.coding_mode else "plain",
        "original_sample_rate": h.original_sample_rate,
        "model_sample_rate": h.model_sample_rate,
        "channels": h.channels,
        "num_samples": h.num_samples,
        "duration_s": duration,
        "hop_length": h.hop_length,
        "frame_rate_hz": h.frame_rate,
        "chunk_frames": h.chunk_frames,
        "n_q": h.n_q,
        "pitch_rows": h.pitch_rows,
        "envelope_tier": h.envelope_tier,
        "envelope_rows": h.envelope_rows,
        "layout": layout,
        "codebook_sizes": list(h.codebook_sizes),
        "plain_kbps": h.plain_kbps,
        "measured_kbps": kbps_of(size, duration),
        "size_bytes": size,
        "body": body,
    }


def run_info(args: argparse.Namespace) -> int:
    from ..bitstream.header import escape_text

    failed = 0
    for path in args.inputs:
        try:
            info = rcq_info(path, args.check)
        except (ValueError, OSError) as exc:
            from .main import _one_line

            failed += 1
            msg = _one_line(exc)
            print(f"rotcodec info: error: {msg if path in msg else f'{path}: {msg}'}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(info))
            continue
        runs: list[list[int]] = []  # [count, size] runs of the per-row alphabet sizes: "1 x 128 + 11 x 1024"
        for k in info["codebook_sizes"]:
            if runs and runs[-1][1] == k:
                runs[-1][0] += 1
            else:
                runs.append([1, k])
        print(
            f"{path}\n  format version   {info['format_version']}\n"
            f"  model            {escape_text(info['model_id'])} (hash {info['model_hash'][:16]}, "
            f"{'installed: ' + info['model_installed'] if info['model_installed'] else 'not installed'})\n"
            f"  audio            {info['channels']} ch, {info['original_sample_rate']} Hz, "
            f"{info['num_samples']} samples ({info['duration_s']:.3f} s)\n"
            f"  codes            {' + '.join(f'{n} x {k}' for n, k in runs)} codes per frame, "
            f"{info['frame_rate_hz']:g} Hz frames at {info['model_sample_rate']} Hz, {info['coding']} coding\n"
            f"  rows             {info['layout']}\n"
            f"  bitrate          plain-packed {info['plain_kbps']:.3f} kbps, measured {info['measured_kbps']:.3f} kbps "
            f"({info['size_bytes']} bytes)\n"
            f"  body             {info['body']}"
        )
    return EXIT_ERROR if failed else EXIT_OK


def run_models(args: argparse.Namespace) -> int:
    import math

    from ..bitstream.header import escape_text
    from ..pretrained import list_models, search_report

    rows = []
    for e in list_models():
        cfg = e.meta.get("config") or {}
        q = cfg.get("quantizer") or {}
        sr, n_q, k = cfg.get("sample_rate", 0), q.get("n_q", 0), q.get("codebook_size", 2)
        hop = math.prod(cfg.get("strides") or [1])
        # plain-packing rates: one stage plus the pitch row, up to every stage, pitch and envelope row
        pitch_bits = 7 if cfg.get("pitch") else 0  # models.harmonic.PITCH_SYMBOLS = 128; not imported: no torch here
        env = cfg.get("envelope") or {}
        env_bits = len(env.get("edges_hz", [])) * math.ceil(math.log2(env.get("levels", 1) or 1))
        stage_bits = math.ceil(math.log2(k))
        rows.append(
            {
                "name": e.name,
                "source": e.source,
                "sample_rate": sr,
                "n_q": n_q,
                "codebook_size": k,
                "kbps_min": sr / hop * (stage_bits + pitch_bits) / 1000.0,
                "kbps_max": sr / hop * (n_q * stage_bits + pitch_bits + env_bits) / 1000.0,
                "entropy_tables": bool(e.meta.get("has_code_counts")),
                "path": str(e.weights_path),
            }
        )
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return EXIT_OK
    for r in rows:
        print(
            f"{escape_text(r['name']):<16} {r['source']:<8} {r['sample_rate']} Hz, "
            f"{r['n_q']} x {r['codebook_size']} codes, "
            f"{r['kbps_min']:.2f}-{r['kbps_max']:.2f} kbps/ch (plain), entropy tables: "
            f"{'yes' if r['entropy_tables'] else 'no'}  {escape_text(r['path'])}"
        )
    if not rows:
        print("no models found")
    for line in search_report():
        print(line, file=sys.stderr)
    return EXIT_OK
