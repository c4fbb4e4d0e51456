"""Everything a training run builds before its first step: the process (device, process group, seed), the
point it starts from (`--resume`, a refused run folder), the run folder itself, `--init` weights, and the
models with their optimizers, restored from the checkpoint when resuming.

The order of these calls is part of a run's result: the codec and the discriminator draw their initial
weights from the RNG seeded in `setup_process`, and a checkpoint's RNG state is restored only after both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..config import to_dict
from ..losses.adversarial import GeneratorLoss
from ..models.codec import Codec
from ..models.discriminators import Discriminator
from ..models.io import read_model
from .checkpoint import (
    CheckpointError,
    checkpoint_step,
    latest_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    require_intact,
)
from .recipe import Recipe


class TrainingError(RuntimeError):
    """A run that cannot continue (repeated non-finite losses, a run folder in use, ...)."""


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (nothing to do without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device(name)


def setup_process(cfg: Any) -> tuple[DistInfo, torch.device]:
    """Join the process group, pick this rank's device and seed its RNG from `train.seed` + rank."""
    device_kind = "cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    info = setup_distributed(device_kind)
    device = pick_device(cfg.device, info)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed + info.rank)
    return info, device


def start_point(run_dir: Path, recipe: Recipe, resume: bool, info: DistInfo) -> tuple[Path | None, int]:
    """The verified checkpoint to resume from (None: start afresh) and the step training starts at.
    Without `resume`, a folder that already holds checkpoints is refused rather than overwritten."""
    ckpt = resume_point(run_dir, recipe) if resume else None
    start = checkpoint_step(ckpt) if ckpt is not None else 0
    if start < recipe.train.steps and info.main and not resume and _has_checkpoints(run_dir):
        raise TrainingError(f"{run_dir} already holds a run: pass --resume to continue it, or another --run-dir")
    return ckpt, start


def _has_checkpoints(run_dir: Path) -> bool:
    root = run_dir / "checkpoints"
    return (root / "latest").exists() or any(p.is_dir() for p in root.glob("step_*"))


def resume_point(run_dir: Path, recipe: Recipe) -> Path | None:
    """The verified checkpoint `--resume` continues from; None for a run stopped before its first one.
    A folder that holds no run at all is an error: resuming it would silently start a new run."""
    if not (run_dir / "config.json").is_file():
        what = "does not exist" if not run_dir.exists() else "holds no run (no config.json)"
        raise TrainingError(f"--resume: {run_dir} {what}; leave out --resume to start a new run there")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        if _has_checkpoints(run_dir):  # starting over would throw them away
            raise CheckpointError(
                f"{run_dir / 'checkpoints' / 'latest'} is missing but step folders exist: "
                "write the name of the one to resume from into it"
            )
        return None
    require_intact(ckpt)
    _check_same_model(ckpt, recipe)
    return ckpt


def _check_same_model(ckpt: Path, recipe: Recipe) -> None:
    """A checkpoint of another model config must not resume into this recipe, even where shapes agree
    (e.g. another estimator). Keys only one side has (settings added since) are not compared."""
    try:
        saved = json.loads((ckpt / "state.json").read_text()).get("recipe", {}).get("model")
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{ckpt / 'state.json'}: unreadable ({exc})") from None
    if not isinstance(saved, dict):
        return
    diffs = _differences(saved, to_dict(recipe.model), "model")
    if diffs:
        shown = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} in the recipe" for k, a, b in diffs[:3])
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise CheckpointError(f"{ckpt} was written for another model: {shown}{more}")


def _differences(a: Any, b: Any, where: str) -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) & set(b)):
            out += _differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [(where, a, b)]


def prepare_run_dir(run_dir: Path, recipe: Recipe, start: int, restart: bool) -> None:
    """Rank 0: create the run folder, write `config.json`, drop metrics rows logged after step `start` and
    remove checkpoint folders a kill left half-written. `restart`: `--resume` found no checkpoint."""
    if restart:
        print(f"{run_dir} has no checkpoint yet: starting it again from step 0", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_dict(recipe), indent=2) + "\n")
    _cut_metrics(run_dir / "metrics.jsonl", start)  # a run stopped before its first checkpoint: start = 0
    remove_stale_temporaries(run_dir)


def _cut_metrics(path: Path, step: int) -> None:
    """Drop the rows a stopped run logged after its checkpoint at `step` (and a line cut by a kill), so a
    resumed run logs each step once."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def load_init(codec: Codec, init: str, fresh: Sequence[str] = ()) -> None:
    """Copy the weights of model file `init` into `codec`, or raise a one-line error. A harmonic source the
    recipe adds keeps its own init; one the recipe drops (a speech model fine-tuned for music) is left out.
    fresh: names of the codec's parts (`encoder`, `quantizer`, ...) that keep their own initialisation; a
    fresh quantizer starts its codebooks again (k-means on the first batch when the recipe asks for it)."""
    parts = {name for name, _ in codec.named_children()}
    unknown = [name for name in fresh if name not in parts]
    if unknown:
        have = ", ".join(sorted(parts))
        raise TrainingError(f"train.init_fresh: the codec has no part named {', '.join(unknown)} (it has {have})")
    try:
        loaded = read_model(init).codec  # ModelFileError (a ValueError) for a missing or corrupt file
    except (RuntimeError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise TrainingError(f"--init {init}: cannot build the model it describes ({reason})") from None
    ours, theirs = codec.state_dict(), loaded.state_dict()
    shapes = [
        f"{k} {list(theirs[k].shape)} in the file, {list(ours[k].shape)} in the recipe"
        for k in sorted(set(ours) & set(theirs))
        if theirs[k].shape != ours[k].shape
    ]
    # a harmonic source or a decoder's source input (zero at first) the file lacks keeps its own init
    missing = [k for k in sorted(set(ours) - set(theirs)) if not k.startswith(("harmonic.", "decoder.source_in."))]
    if codec.harmonic is None:
        theirs = {k: v for k, v in theirs.items() if not k.startswith("harmonic.")}
    unexpected = sorted(set(theirs) - set(ours))
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} tensor(s) differ in shape, e.g. {'; '.join(shapes[:2])}")
    if missing:
        problems.append(f"{len(missing)} missing from the file, e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} the recipe has no place for, e.g. {', '.join(unexpected[:3])}")
    if problems:
        raise TrainingError(f"--init {init}: weights do not match the recipe's model: {'; '.join(problems)}")
    keep = tuple(f"{name}." for name in fresh)
    codec.load_state_dict({k: v for k, v in theirs.items() if not k.startswith(keep)}, strict=False)


class _Generator(nn.Module):
    """Codec forward returning plain tensors and dicts, which DDP can traverse."""

    def __init__(self, codec: Codec) -> None:
        super().__init__()
        self.codec = codec

    def forward(
        self, wav: torch.Tensor, envelope: bool = False, lock: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None, int]:
        out = self.codec(wav, lock=lock)
        audio = self.codec.correct_levels(wav, out.audio) if envelope else out.audio
        return audio, out.vq_loss, out.stats, out.harmonic, out.locked


@dataclass
class Models:
    """What a step trains. `gen` wraps `codec` (and `disc` is wrapped) for DDP in a multi-process run;
    `disc`/`opt_d` are None when the recipe has no adversarial term."""

    codec: Codec
    gen: nn.Module
    disc: nn.Module | None
    loss_fn: GeneratorLoss
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None


def adamw(params: Any, device: torch.device, **kwargs: Any) -> torch.optim.AdamW:
    """AdamW, fused into one kernel on a CPU where this torch has it (2.4+): the same update to float32
    rounding, ~4 ms a step faster than the per-tensor loop on speech16k's 141 weight tensors (2 cores)."""
    params = list(params)
    if device.type == "cpu":
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # older torch: no CPU kernel (or no `fused` at all)
            pass
    return torch.optim.AdamW(params, **kwargs)


def compile_codec(codec: Codec, mode: str) -> None:
    """`train.compile`: fuse every stage's rotation trick ("rotation"), and compile the encoder and decoder
    too ("model"). In place: parameter names, checkpoints and exported weights stay as they were."""
    if mode == "none":
        return
    for stage in codec.quantizer.stages:
        stage.fused_rotation = True
    if mode == "model":
        codec.encoder.compile()
        codec.decoder.compile()


def build_models(
    codec: Codec, recipe: Recipe, device: torch.device, info: DistInfo, ckpt: Path | None, start: int
) -> Models:
    """Discriminator, loss and optimizers around `codec` on `device`, restored from `ckpt` (expected at step
    `start`) when resuming, then wrapped for DDP."""
    cfg = recipe.train
    codec.to(device).train()
    disc = Discriminator(recipe.discriminator).to(device).train() if recipe.discriminator.enabled else None
    if disc is not None and recipe.loss.adv == 0 and recipe.loss.feat == 0:
        disc = None
    loss_fn = GeneratorLoss(recipe.loss, recipe.model.sample_rate, recipe.model.hop_length).to(device)
    opt_g = adamw(codec.parameters(), device, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    opt_d = adamw(disc.parameters(), device, lr=cfg.disc_lr, betas=tuple(cfg.betas)) if disc else None
    if ckpt is not None:  # restores the RNG state last, after model construction consumed the seed
        fused = [None if opt is None else opt.param_groups[0]["fused"] for opt in (opt_g, opt_d)]
        step = int(load_checkpoint(ckpt, codec, disc, opt_g, opt_d)["step"])
        if step != start:
            raise CheckpointError(f"{ckpt}: state.json changed while it was loaded")
        for opt, flag in zip((opt_g, opt_d), fused, strict=True):  # this machine's choice, not the saving one's
            for group in [] if opt is None else opt.param_groups:
                group["fused"] = flag
    compile_codec(codec, cfg.compile)
    gen: nn.Module = _Generator(codec)
    if info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # EMA codebooks are all-reduced by the quantizer itself; dropout can leave stages' params unused.
        gen = DDP(gen, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)
        if disc is not None:
            disc = DDP(disc, device_ids=ids, broadcast_buffers=False)
    return Models(codec, gen, disc, loss_fn, opt_g, opt_d)
