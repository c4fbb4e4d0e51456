"""Codec speed and memory: encode/decode real-time factor per bitrate, peak RSS for 1 vs 10 minutes, vs Opus.

    python benchmarks/codec_speed.py                       # default model (speech16k), 2 CPU threads
    python benchmarks/codec_speed.py --model runs/x/model  # any model file
    python benchmarks/codec_speed.py --minutes 1 10 --seconds 10 --threads 2
    python benchmarks/codec_speed.py --anchors --minutes   # against EnCodec 24 kHz, 1 and 2 threads

`--anchors` needs EnCodec (`pip install --no-deps encodec`; its torchaudio import is stubbed, since
torchaudio does not load beside this torch and a random-weight model never calls it). It times EnCodec
24 kHz at 6 kbps (random weights: speed does not depend on them) beside rotcodec at each `--kbps` setting in
one run, the latency of one 20 ms frame through rotcodec's streaming encoder and decoder, and the floor of
any `--kbps` encode: one encoder pass plus one decode, since band gains are measured on a decode.

Without an installed model, a random-weight model with the default `CodecConfig` (speech16k architecture)
is used: speed and memory do not depend on the weights. Real-time factor = audio seconds / wall seconds
(higher is faster). The process runs with `rotcodec.runtime.keep_freed_memory`, as the `rotcodec` commands
do (EnCodec's timings, taken in the same process, share it). Peak memory is the maximum resident set size of
a fresh subprocess that runs `rotcodec compress` / `decompress` on a generated file (so every measurement
starts clean), read with os.wait4. Opus (opusenc --hard-cbr / opusdec) is timed and measured the same way in
the same run. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    from rotcodec.inference import CodecModel


def generate(path: Path, seconds: float, sr: int) -> None:
    """Write a speech-like test file block by block (never the whole signal in memory)."""
    rng = np.random.default_rng(0)
    block = sr * 10
    with sf.SoundFile(path, "w", sr, 1, "PCM_16") as f:
        for start in range(0, int(seconds * sr), block):
            t = (start + np.arange(min(block, int(seconds * sr) - start))) / sr
            f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
            x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            f.write((0.2 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32))


_LAUNCH = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write("\\nMAXRSS_KB %d\\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run `cmd`; return (wall seconds, peak RSS in MiB of that process).

    A process forked from this (torch-sized) one would inherit its peak RSS, so `cmd` is started by a bare
    `python -I -S` launcher that reports its child's ru_maxrss (floor: the launcher's ~7 MiB at fork)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCH, *cmd], capture_output=True, env=env)
    wall = time.perf_counter() - start
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-500:]}")
    return wall, int(err.splitlines()[-1].split()[-1]) / 1024.0


def default_model(workdir: Path) -> str:
    """The installed speech16k model, else a random-weight model with the same architecture."""
    from rotcodec.pretrained import ModelNotFoundError, resolve_model

    try:
        return str(resolve_model(None).base)
    except ModelNotFoundError:
        import torch

        from rotcodec.models import Codec, CodecConfig, save_model

        torch.manual_seed(0)
        save_model(Codec(CodecConfig()).eval(), workdir / "random_speech16k")
        print("(no speech16k model installed: using random weights, same architecture)", file=sys.stderr)
        return str(workdir / "random_speech16k")


def speed_table(model_path: str, seconds: float, repeats: int) -> list[str]:
    """Markdown rows: rotcodec encode/decode real-time factor for every number of stages."""
    from rotcodec.inference import load_model, read_rcq_header

    model = load_model(model_path)
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * model.sample_rate)) / model.sample_rate
    wav = (0.2 * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    model.compress(wav[: model.sample_rate], model.sample_rate)  # warm-up
    rows = []
    for n_q in range(1, model.n_q + 1):
        enc = dec = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            data = model.compress(wav, model.sample_rate, n_q=n_q)
            t1 = time.perf_counter()
            model.decompress(data)
            t2 = time.perf_counter()
            enc, dec = min(enc, t1 - t0), min(dec, t2 - t1)
        actual = len(data) * 8 / seconds / 1000
        rows.append(
            f"| rotcodec {model.name} n_q={n_q} | {model.bitrate(read_rcq_header(data).layout):.2f} | {actual:.2f} | "
            f"{seconds / enc:.1f} | {seconds / dec:.1f} |"
        )
    return rows


def timed(cmd: list[str]) -> float:
    """Wall seconds of one run of `cmd` (process start included, as a user would see it)."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def opus_speed(wav: Path, seconds: float, kbps: float, sr: int, workdir: Path) -> str:
    opus, out = str(workdir / "o.opus"), str(workdir / "o.wav")
    enc = seconds / timed(["opusenc", "--quiet", "--hard-cbr", "--bitrate", f"{kbps:g}", str(wav), opus])
    dec = seconds / timed(["opusdec", "--quiet", "--rate", str(sr), opus, out])
    actual = (workdir / "o.opus").stat().st_size * 8 / seconds / 1000
    return f"| Opus (opusenc --hard-cbr; measured size incl. Ogg) | {kbps:g} | {actual:.2f} | {enc:.1f} | {dec:.1f} |"


def memory_rows(model_path: str, minutes: list[float], sr: int, workdir: Path, threads: int) -> list[str]:
    """Peak RSS (MiB) of fresh processes: rotcodec compress/decompress and opusenc/opusdec per file length."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    rc = [sys.executable, "-m", "rotcodec.cli.main"]
    results: dict[str, list[str]] = {"rotcodec compress": [], "rotcodec decompress": [], "opusenc": [], "opusdec": []}
    for m in minutes:
        wav = workdir / f"in_{m:g}min.wav"
        generate(wav, m * 60, sr)
        for key, cmd in [
            ("rotcodec compress", rc + ["compress", str(wav), "-o", str(workdir / "x.rcq"), "--model", model_path]),
            ("rotcodec decompress", rc + ["decompress", str(workdir / "x.rcq"), "-o", str(workdir / "y.wav")]),
            ("opusenc", ["opusenc", "--quiet", "--hard-cbr", "--bitrate", "6", str(wav), str(workdir / "x.opus")]),
            ("opusdec", ["opusdec", "--quiet", "--rate", str(sr), str(workdir / "x.opus"), str(workdir / "z.wav")]),
        ]:
            if key.startswith("opus") and not shutil.which(cmd[0]):
                results[key].append("n/a")
                continue
            if key == "rotcodec decompress":
                cmd += ["--model", model_path]
            wall, rss = run_measured(cmd + (["--force", "--quiet"] if key.startswith("rotcodec") else []), env)
            results[key].append(f"{rss:.0f} MiB ({m * 60 / wall:.1f}x)")
        wav.unlink()
    head = "| process | " + " | ".join(f"{m:g} min: peak RSS (x real time)" for m in minutes) + " |"
    return [head, "|---" * (len(minutes) + 1) + "|"] + [f"| {k} | " + " | ".join(v) + " |" for k, v in results.items()]


def best_of(repeats: int, fn) -> float:  # noqa: ANN001
    """Fastest wall time (s) of `repeats` calls of `fn`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def load_encodec():  # noqa: ANN201
    """EnCodec 24 kHz at 6 kbps with random weights, or None when the package is missing."""
    import types

    import torch

    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # imported by encodec, unused here
    try:
        from encodec import EncodecModel
    except ImportError:
        return None
    torch.manual_seed(0)
    model = EncodecModel.encodec_model_24khz(pretrained=False)
    model.set_target_bandwidth(6.0)
    return model.eval()


def anchor_rows(model_path: str, seconds: float, repeats: int, kbps: list[float], workdir: Path) -> list[str]:
    """Markdown rows: EnCodec 24 kHz and rotcodec at each rate, 1 and 2 threads, real-time factors and
    rotcodec / EnCodec ratios from the same run."""
    import torch

    from rotcodec.inference import load_model

    encodec = load_encodec()
    if encodec is None:
        return ["(anchors skipped: EnCodec is not installed; `pip install --no-deps encodec`)"]
    model = load_model(model_path)
    wav = workdir / "anchor.wav"
    generate(wav, seconds, model.sample_rate)
    x, sr = sf.read(wav, dtype="float32")
    generate(workdir / "anchor24.wav", seconds, 24000)
    x24 = torch.from_numpy(sf.read(workdir / "anchor24.wav", dtype="float32")[0])[None, None]
    rows = ["| threads | codec | encode x real time | decode x real time | encode / EnCodec | decode / EnCodec |"]
    rows.append("|---|---|---|---|---|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.no_grad():
            frames = encodec.encode(x24)
            enc_ref = seconds / best_of(repeats, lambda: encodec.encode(x24))
            dec_ref = seconds / best_of(repeats, lambda: encodec.decode(frames))  # noqa: B023
        rows.append(f"| {threads} | EnCodec 24 kHz, 6 kbps (14.9 M params) | {enc_ref:.1f} | {dec_ref:.1f} | 1 | 1 |")
        for rate in kbps:
            data = model.compress(x, sr, kbps=rate)
            enc = seconds / best_of(repeats, lambda: model.compress(x, sr, kbps=rate))  # noqa: B023
            dec = seconds / best_of(repeats, lambda: model.decompress(data))  # noqa: B023
            rows.append(
                f"| {threads} | rotcodec {model.name} `--kbps {rate:g}` | {enc:.1f} | {dec:.1f} | "
                f"{enc / enc_ref:.2f} | {dec / dec_ref:.2f} |"
            )
        rows.append(encode_floor_row(model, x, sr, seconds, repeats, threads, enc_ref))
    return rows


def encode_floor_row(
    model: CodecModel, x: np.ndarray, sr: int, seconds: float, repeats: int, threads: int, enc_ref: float
) -> str:
    """A markdown row: the fastest a `--kbps` encode that sends band gains could run (the shipped models send
    them at every rate from 1.5 to 16 kbps). Band gains are measured on a decode of the stream (analysis by
    synthesis), so such an encode costs at least one encoder pass plus one decode: their summed time,
    measured here (the decode at `--kbps 6`), bounds its real-time factor."""
    import torch
    from torch.nn.utils import parametrize

    assert sr == model.sample_rate, "the anchor audio is generated at the model's rate"
    wav = torch.from_numpy(x)[None, None]
    data = model.compress(x, sr, kbps=6.0)

    def encoder_pass() -> None:
        with torch.no_grad(), parametrize.cached():
            model.codec.encoder(wav)

    t_enc = best_of(repeats, encoder_pass)
    t_dec = best_of(repeats, lambda: model.decompress(data))
    floor = seconds / (t_enc + t_dec)
    return (
        f"| {threads} | floor: encoder pass ({seconds / t_enc:.1f}x) + one decode ({seconds / t_dec:.1f}x) | "
        f"{floor:.1f} | | {floor / enc_ref:.2f} | |"
    )


def frame_latency(model_path: str, kbps: float, frames: int = 100) -> str:
    """Median ms to encode, and to decode, one frame (20 ms at 50 Hz) in streaming mode, one thread."""
    import torch

    from rotcodec.inference import load_model

    torch.set_num_threads(1)
    model = load_model(model_path)
    codec, hop = model.codec, model.hop_length
    rng = np.random.default_rng(0)
    chunks = [torch.from_numpy(0.1 * rng.standard_normal((1, 1, hop), dtype=np.float32)) for _ in range(frames)]
    layout = model.plan(kbps)
    enc_ms, dec_ms, codes = [], [], []
    # model._streaming(): the codec's streaming state with weight norm computed once per stream, as the CLI codes
    with torch.no_grad(), model._streaming():
        for c in chunks:
            start = time.perf_counter()
            codes.append(codec.encode(c, layout.n_q, layout.envelope))
            enc_ms.append(1000 * (time.perf_counter() - start))
    with torch.no_grad(), model._streaming():
        for c in codes:
            if c.shape[-1] == 0:
                continue
            start = time.perf_counter()
            codec.decode(c, layout.envelope)
            dec_ms.append(1000 * (time.perf_counter() - start))
    return (
        f"One {1000 * hop / model.sample_rate:g} ms frame, streaming, 1 thread, `--kbps {kbps:g}` layout: "
        f"encode {np.median(enc_ms[5:]):.2f} ms, decode {np.median(dec_ms[5:]):.2f} ms (median of {frames - 5})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model name or path (default: speech16k, else random weights)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio length for the speed table")
    p.add_argument("--repeats", type=int, default=2, help="best of N timings")
    p.add_argument("--minutes", type=float, nargs="*", default=[1.0, 10.0], help="file lengths for peak memory")
    p.add_argument("--opus-kbps", type=float, nargs="*", default=[6.0, 8.0, 12.0])
    p.add_argument("--anchors", action="store_true", help="also time EnCodec 24 kHz beside rotcodec (see above)")
    p.add_argument("--kbps", type=float, nargs="*", default=[1.5, 3.0, 6.0, 12.0], help="rotcodec rates for --anchors")
    args = p.parse_args(argv)

    import torch

    from rotcodec.runtime import keep_freed_memory

    keep_freed_memory()  # as every rotcodec command does; EnCodec, timed in this process too, gets it as well
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_path = args.model or default_model(workdir)
        from rotcodec.inference import load_model

        sr = load_model(model_path).sample_rate
        print(f"## Speed ({args.seconds:g} s of audio, {args.threads} CPU threads, best of {args.repeats})\n")
        print("| codec | planned kbps | measured kbps | encode x real time | decode x real time |")
        print("|---|---|---|---|---|")
        for row in speed_table(model_path, args.seconds, args.repeats):
            print(row)
        if shutil.which("opusenc") and shutil.which("opusdec"):
            wav = workdir / "speed.wav"
            generate(wav, args.seconds, sr)
            for kbps in args.opus_kbps:
                print(opus_speed(wav, args.seconds, kbps, sr, workdir))
        if args.anchors:
            print(f"\n## Against EnCodec ({args.seconds:g} s of audio, best of {args.repeats}, same run)\n")
            for row in anchor_rows(model_path, args.seconds, args.repeats, args.kbps, workdir):
                print(row)
            print("\n" + frame_latency(model_path, 6.0))
            torch.set_num_threads(args.threads)
        if args.minutes:
            print(f"\n## Peak memory (fresh process per run, {sr} Hz mono input, {args.threads} threads)\n")
            for row in memory_rows(model_path, args.minutes, sr, workdir, args.threads):
                print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
