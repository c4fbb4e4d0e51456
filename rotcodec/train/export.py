"""Turn a training checkpoint into a shippable model file with code-frequency tables.

    rotcodec export runs/speech16k/checkpoints/step_00001500 -o rotcodec/pretrained/speech16k \
        --data /path/to/speech_manifest.tsv --seconds 600

The tables (`code_counts [rows, K]`: how often each code of each stage, and each pitch symbol, occurs on
real audio; `context_counts`: how often each band gain or phase symbol follows each symbol of its row's
previous frame) let the `.rcq` entropy-coded mode spend fewer bits on frequent codes; they are stored inside
the model file. Each stage's codes are renumbered by falling use, so a stream can trim its last stage to
its most used codes (`CodecModel.plan`).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from ..data.dataset import DataConfig, build_datasets
from ..models import Codec
from ..models.io import STORAGE_DTYPES, ModelFileError, has_skip_code, read_model, round_weights_, save_model
from .quality_table import measure_layout_quality
from .recipe import load_recipe


def crop_batches(codec, sources: list[str], seconds: float, seed: int = 0, batch: int = 16):  # noqa: ANN001, ANN201
    """Batches `[batch, channels, time]` of `seconds` 1-second training crops of `sources` at the codec's rate
    and channels (level-normalised, no gain jitter): the audio export and requantize measure the model on."""
    cfg = DataConfig(
        sources=sources,
        sample_rate=codec.sample_rate,
        channels=codec.channels,
        segment_seconds=1.0,
        items_per_epoch=max(1, int(seconds)),
        valid_fraction=0.0,
        gain_jitter_db=0.0,
        num_workers=0,
        seed=seed,
    )
    with warnings.catch_warnings():  # measuring needs no validation split
        warnings.filterwarnings("ignore", message="no validation files")
        train_ds, _ = build_datasets(cfg)
    for start in range(0, len(train_ds), batch):
        yield torch.stack([train_ds[i] for i in range(start, min(start + batch, len(train_ds)))])


@torch.no_grad()
def count_codes(
    codec,  # noqa: ANN001
    sources: list[str],
    seconds: float,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Code histogram `[rows, K]` (int64; rows as `Codec.table_sizes`: the pitch row, every envelope tier's band
    gains, all stages) over `seconds` of 1-second crops of `sources`, and the envelope rows' counts of each
    symbol after each symbol of the previous frame, flat (`models.io.unpack_context`; the entropy coder's
    context rows).
    Band gains are measured on the full-n_q decode, as a stream with every stage would send them."""
    sizes = codec.table_sizes()
    counts = torch.zeros(len(sizes), max(sizes), dtype=torch.long)
    context = [torch.zeros(k * k, dtype=torch.long) for k in codec.context_sizes()]
    first = codec.pitch_rows
    for batch in crop_batches(codec, sources, seconds, seed):
        for r, row in enumerate(codec.table_codes(batch)):
            counts[r] += torch.bincount(row.reshape(-1), minlength=max(sizes))
            if 0 <= r - first < len(context):
                k = sizes[r]
                context[r - first] += torch.bincount((row[:, :-1] * k + row[:, 1:]).reshape(-1), minlength=k * k)
    return counts, torch.cat(context) if context else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def add_skip_codes_(codec) -> bool:  # noqa: ANN001
    """Make code 0 of every stage the zero vector, in place of the stage's least used code (by its usage
    statistics): a stage trimmed to its first k codes can then leave a frame as it is, so trimming to any k
    brings the latent closer or leaves it, and `--kbps` can spend a few bits a frame. Whole stages almost
    never pick it (a residual is rarely nearer zero than every code). False, and nothing changed, for
    factorised codes, whose lookup normalises the codes."""
    stages = codec.quantizer.stages
    if any(stage.factorised for stage in stages):
        return False
    for stage in stages:
        least = int(torch.argmin(stage.cluster_size))
        stage.codebook.data[least] = 0
        k = stage.cfg.codebook_size
        order = torch.cat([torch.tensor([least]), torch.arange(k)[torch.arange(k) != least]])
        stage.permute_codes_(order.to(stage.codebook.device))
    return True


@torch.no_grad()
def sort_codes_(codec, counts: torch.Tensor, keep_first: bool = False) -> None:  # noqa: ANN001
    """Renumber every stage's codes by falling count (ties: lower number first) in the codec and in `counts`
    (`count_codes`' table, changed in place), so that a stage trimmed to its first k codes keeps its k most
    used ones (`StreamLayout.last_codes`). keep_first: code 0 (the skip code) stays first."""
    first = counts.shape[0] - codec.n_q
    skip = int(keep_first)
    for s, stage in enumerate(codec.quantizer.stages):
        k = stage.cfg.codebook_size
        rest = torch.sort(-counts[first + s, skip:k], stable=True).indices + skip
        order = torch.cat([torch.arange(skip), rest])
        stage.permute_codes_(order.to(stage.codebook.device))
        counts[first + s, :k] = counts[first + s, :k][order]


def export(
    checkpoint: Path,
    out: Path,
    sources: list[str],
    seconds: float,
    card: dict,
    dtype: str = "float16",
    recipe: Path | None = None,
    quality_seconds: float = 0.0,
    skip_code: bool = True,
) -> Path:
    """Write an inference-only model file from a checkpoint; float weights are stored as `dtype`. recipe: take
    the model config from this recipe instead (settings without weights, such as `envelope`); the
    checkpoint's weights must fit it exactly. quality_seconds: measure every layout's quality on that many
    seconds of `sources` (`quality_table.py`), which the planner then ranks layouts by. skip_code: give every
    stage a skip code when `sources` are counted (`add_skip_codes_`; kept when the model already has one)."""
    model_path = checkpoint / "model" if (checkpoint / "model.json").exists() else checkpoint
    loaded = read_model(model_path)
    codec = loaded.codec
    if recipe is not None:
        codec = Codec(load_recipe(recipe).model).eval()
        try:
            missing, unexpected = codec.load_state_dict(loaded.codec.state_dict(), strict=False)
            problem = f"{len(missing)} missing, {len(unexpected)} unexpected tensors" if missing or unexpected else ""
        except RuntimeError as exc:  # shape mismatches
            problem = str(exc).strip().splitlines()[-1].strip()
        if problem:
            raise ModelFileError(f"the weights of {checkpoint} do not fit the model of {recipe}: {problem}")
    skip = has_skip_code(codec)
    if sources and skip_code and not skip:  # trimmed stages need the tables: without them, no skip code
        skip = add_skip_codes_(codec)
    round_weights_(codec, STORAGE_DTYPES[dtype])  # count codes with the weights that ship
    counts, context = count_codes(codec, sources, seconds) if sources else (None, None)
    if counts is not None:
        sort_codes_(codec, counts, keep_first=skip)
    meta = {**loaded.extra, **card}
    if recipe is not None:  # its tiers may differ from those the old table measured
        meta.pop("layout_quality", None)
    if counts is not None:
        meta["code_count_seconds"] = seconds
    if quality_seconds > 0 and sources:
        table = measure_layout_quality(codec, crop_batches(codec, sources, quality_seconds, seed=1))
        meta["layout_quality"] = {"metric": "mel_distance", "seconds": quality_seconds, "table": table}
    weights, _ = save_model(
        codec,
        out,
        extra_meta=meta,
        code_counts=counts,
        inference_only=True,
        storage_dtype=STORAGE_DTYPES[dtype],
        context_counts=context if context is not None and context.numel() else None,
    )
    return weights


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import HelpFormatter, add_threads_option

    p = subparsers.add_parser(
        "export",
        help="checkpoint -> model file with code-frequency tables",
        description="Write a shippable model file (NAME.safetensors + NAME.json) from a checkpoint, with "
        "code-frequency tables for entropy coding when --data is given.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", help="a checkpoint folder (RUN/checkpoints/step_N) or a model file")
    p.add_argument("-o", "--out", required=True, help="output model path (NAME -> NAME.safetensors + NAME.json)")
    p.add_argument("--data", nargs="*", default=[], help="audio folders/manifests for the code-frequency tables")
    p.add_argument("--seconds", type=float, default=300.0, help="seconds of audio to count codes on")
    p.add_argument(
        "--dtype",
        choices=list(STORAGE_DTYPES),
        default="float16",
        help="storage precision of the weights (float16 halves the file; loading uses float32)",
    )
    p.add_argument(
        "--quality-seconds",
        type=float,
        default=0.0,
        help="also measure every layout's mel distance on this many seconds of --data (other crops than the "
        "tables'); --kbps then sends the best layout that fits instead of the fixed rule",
    )
    p.add_argument(
        "--no-skip-code",
        action="store_true",
        help="keep every stage's codes as trained (default: code 0 becomes a zero 'skip' code, in place of the "
        "least used one, so a trimmed last stage can leave frames as they are)",
    )
    p.add_argument("--card", help="JSON file with model-card fields to store in the metadata")
    p.add_argument("--recipe", help="take the model config from this recipe (its weights must match the checkpoint's)")
    add_threads_option(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..cli import use_threads

    use_threads(args.threads)
    card = json.loads(Path(args.card).read_text()) if args.card else {}
    recipe = Path(args.recipe) if args.recipe else None
    path = export(
        Path(args.checkpoint),
        Path(args.out),
        args.data,
        args.seconds,
        card,
        args.dtype,
        recipe,
        args.quality_seconds,
        skip_code=not args.no_skip_code,
    )
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
