"""Do the bytes of a compressed file depend on the CPU thread count, and what would making them not cost?

    python benchmarks/thread_determinism.py --file long.wav --kbps 6
    python benchmarks/thread_determinism.py --seconds 120          # generated speech-like audio

Compresses the same audio with 1 and 2 torch threads, with oneDNN (torch's default CPU convolutions) on and
off, in one process, and prints a table: encode and decode seconds, and how many codes differ from the
1-thread stream of the same setting. oneDNN splits a convolution's sums differently for different thread
counts, so a latent at a near-tie between two codes can be coded either way; torch's own kernels do not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from codec_speed import generate  # noqa: E402


def codes_of(model, data: bytes) -> np.ndarray:  # noqa: ANN001
    from rotcodec.bitstream import decode_bytes
    from rotcodec.inference import read_rcq_header

    layout = model.layout_of(read_rcq_header(data))
    return decode_bytes(data, model.tables(layout), model.context_tables(layout))[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", help="audio file (default: generated speech-like audio)")
    p.add_argument("--seconds", type=float, default=120.0, help="length of the generated audio")
    p.add_argument("--kbps", type=float, default=6.0)
    p.add_argument("--model", help="model name or path (default: speech16k)")
    args = p.parse_args(argv)

    from rotcodec.inference import load_model

    model = load_model(args.model)
    if args.file:
        x, sr = sf.read(args.file, dtype="float32", always_2d=True)
        x = x.T
    else:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp) / "g.wav", args.seconds, model.sample_rate)
            x, sr = sf.read(Path(tmp) / "g.wav", dtype="float32", always_2d=True)
            x = x.T
    seconds = x.shape[1] / sr
    print(f"{seconds:.0f} s at {sr} Hz, `--kbps {args.kbps:g}`, model {model.name}\n")
    print("| oneDNN | threads | encode s | decode s | codes differing from 1 thread (of all) | same bytes |")
    print("|---|---|---|---|---|---|")
    for onednn in (True, False):
        first: tuple[bytes, np.ndarray] | None = None
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.backends.mkldnn.flags(enabled=onednn):
                start = time.perf_counter()
                data = model.compress(x, sr, kbps=args.kbps)
                enc = time.perf_counter() - start
                start = time.perf_counter()
                model.decompress(data)
                dec = time.perf_counter() - start
            codes = codes_of(model, data)
            if first is None:
                first = (data, codes)
            same = data == first[0]
            differ = int((codes != first[1]).sum()) if codes.shape == first[1].shape else codes.size
            setting = "on" if onednn else "off"
            print(f"| {setting} | {threads} | {enc:.1f} | {dec:.1f} | {differ} of {codes.size} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
