"""The training step loop: one process, or one rank of a torchrun/DDP job.

    rotcodec train recipes/speech16k.yaml --run-dir runs/speech16k [--set train.steps=2000] [--resume]
    torchrun --nproc-per-node 4 -m rotcodec.cli.main train recipes/speech16k.yaml --run-dir runs/x

Rank 0 logs (`metrics.jsonl`, TensorBoard, progress bar), validates and checkpoints. Data order depends only
on (seed, step), so a resumed run sees exactly the batches the killed run would have seen.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from ..audio import save_audio
from ..config import to_dict
from ..data.dataset import build_datasets
from ..losses.adversarial import GeneratorLoss, discriminator_loss
from ..models.codec import Codec
from ..models.discriminators import Discriminator
from ..models.io import read_model
from .checkpoint import (
    CheckpointError,
    checkpoint_step,
    damaged_message,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from .diagnostics import latent_effective_dims
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


def lr_at(step: int, cfg: Any) -> float:
    """Linear warm-up, then cosine decay to lr · final_lr_ratio (a pure function of the step: no state)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    floor = cfg.final_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class _Generator(nn.Module):
    """Codec forward returning plain tensors and dicts, which DDP can traverse."""

    def __init__(self, codec: Codec) -> None:
        super().__init__()
        self.codec = codec

    def forward(
        self, wav: torch.Tensor, envelope: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
        out = self.codec(wav)
        audio = self.codec.correct_levels(wav, out.audio) if envelope else out.audio
        return audio, out.vq_loss, out.stats, out.harmonic


class StepBatches:
    """Batches for steps `start, start+1, ...`: the batch of step s is items
    [s·B·W + rank·B, +B) of the epoch stream, whatever the worker count, so resuming at s is exact."""

    def __init__(self, dataset: Any, batch_size: int, num_workers: int, info: DistInfo, start: int) -> None:
        self.ds, self.bs, self.workers, self.info, self.step = dataset, batch_size, num_workers, info, start
        self.per_epoch = len(dataset) // (batch_size * info.world_size)
        if self.per_epoch < 1:
            raise TrainingError(f"data.items_per_epoch ({len(dataset)}) is smaller than one global batch")

    def __iter__(self):  # noqa: ANN204
        while True:
            epoch, first = divmod(self.step, self.per_epoch)
            self.ds.set_epoch(epoch)
            stride = self.bs * self.info.world_size
            batches = [
                list(range(b * stride + self.info.rank * self.bs, b * stride + (self.info.rank + 1) * self.bs))
                for b in range(first, self.per_epoch)
            ]
            # Own generator: creating a loader must not draw from the global RNG (resume would diverge).
            loader = DataLoader(
                self.ds,
                batch_sampler=batches,
                num_workers=self.workers,
                pin_memory=torch.cuda.is_available(),
                generator=torch.Generator().manual_seed(epoch),
            )
            for batch in loader:
                yield batch
                self.step += 1


def _floats(d: dict[str, torch.Tensor]) -> dict[str, float]:
    if not d:
        return {}
    keys = list(d)
    values = torch.stack([d[k].detach().float().reshape(()) for k in keys]).cpu().tolist()  # one host sync
    return dict(zip(keys, values, strict=True))


def train(
    recipe: Recipe, run_dir: str | Path, resume: bool = False, init: str | None = None, quiet: bool = False
) -> dict[str, Any]:
    """Run (or resume) a recipe in `run_dir`; returns the last logged metrics."""
    from tqdm import tqdm

    cfg = recipe.train
    run_dir = Path(run_dir)
    device_kind = "cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    info = setup_distributed(device_kind)
    device = pick_device(cfg.device, info)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed + info.rank)

    ckpt = _resume_point(run_dir, recipe) if resume else None
    start = checkpoint_step(ckpt) if ckpt is not None else 0
    if start >= cfg.steps:
        # Nothing to train: say so instead of returning silently (the CLI prints it).
        return {"step": start, "finished": True, "train.steps": cfg.steps}
    if info.main and not resume and _has_checkpoints(run_dir):
        raise TrainingError(f"{run_dir} already holds a run: pass --resume to continue it, or another --run-dir")
    codec = Codec(recipe.model)
    if init is not None and ckpt is None:
        _load_init(codec, init)  # before the run folder is made: a bad --init leaves nothing behind
    if info.main:
        if resume and ckpt is None:
            print(f"{run_dir} has no checkpoint yet: starting it again from step 0", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(to_dict(recipe), indent=2) + "\n")
        _cut_metrics(run_dir / "metrics.jsonl", start)  # a run stopped before its first checkpoint: start = 0
    codec.to(device).train()
    disc = Discriminator(recipe.discriminator).to(device).train() if recipe.discriminator.enabled else None
    if disc is not None and recipe.loss.adv == 0 and recipe.loss.feat == 0:
        disc = None
    loss_fn = GeneratorLoss(recipe.loss, recipe.model.sample_rate, recipe.model.hop_length).to(device)
    opt_g = torch.optim.AdamW(codec.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=tuple(cfg.betas)) if disc else None
    step = 0
    if ckpt is not None:  # restores the RNG state last, after model construction consumed the seed
        step = int(load_checkpoint(ckpt, codec, disc, opt_g, opt_d)["step"])
        if step != start:
            raise CheckpointError(f"{ckpt}: state.json changed while it was loaded")

    gen: nn.Module = _Generator(codec)
    if info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # EMA codebooks are all-reduced by the quantizer itself; dropout can leave stages' params unused.
        gen = DDP(gen, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)
        if disc is not None:
            disc = DDP(disc, device_ids=ids, broadcast_buffers=False)

    train_ds, valid_ds = build_datasets(recipe.data)
    if info.main and train_ds.skipped:
        print(f"warning: {len(train_ds.skipped)} unreadable file(s) skipped", flush=True)
    batches = iter(StepBatches(train_ds, cfg.batch_size, recipe.data.num_workers, info, step))
    amp = device.type == "cuda" and cfg.amp == "bf16"
    writer = None
    metrics_file = None
    if info.main:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run logged after its checkpoint, as _cut_metrics does for rows.
        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1 if resume else None)
        metrics_file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - closed in finally
    audio_per_step = cfg.batch_size * info.world_size * recipe.data.segment_seconds
    bar = tqdm(total=cfg.steps, initial=step, disable=quiet or not info.main, unit="step", dynamic_ncols=True)
    bad_in_a_row, skipped_total, last = 0, 0, {}
    t_log, step_log = time.perf_counter(), step
    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes > 0 else None
    try:
        while step < cfg.steps:
            wav = next(batches).to(device, non_blocking=True)
            lr = lr_at(step, cfg)
            for group in opt_g.param_groups:
                group["lr"] = lr
            adversarial = disc is not None and step >= cfg.adversarial_start
            # A fixed low-discrepancy sequence picks the envelope steps: the same on every rank and on resume.
            envelope = (step * 0.6180339887498949) % 1.0 < cfg.envelope_prob
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                audio, vq_loss, stats, harmonic = gen(wav, envelope)
            d_parts: dict[str, torch.Tensor] = {}
            if adversarial:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    real_logits, _ = disc(wav)
                    fake_logits, _ = disc(audio.detach())
                    d_loss = discriminator_loss(real_logits, fake_logits, recipe.loss.adversarial)
                opt_d.zero_grad(set_to_none=True)
                d_loss.float().backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.grad_clip)
                opt_d.step()
                d_parts["disc"] = d_loss.detach()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    fake_logits, fake_feats = disc(audio)
                    with torch.no_grad():
                        _, real_feats = disc(wav)
                total, parts = loss_fn(
                    audio.float(), wav, vq_loss, fake_logits, fake_feats, real_feats, harmonic=harmonic
                )
            else:
                total, parts = loss_fn(audio.float(), wav, vq_loss, harmonic=harmonic)
            opt_g.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                codec.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            )
            # The NaN guard is the loop's one per-step host sync: a non-finite step must not reach the weights.
            finite = bool(torch.isfinite(total) & torch.isfinite(grad_norm))
            if finite:
                opt_g.step()
                bad_in_a_row = 0
            else:
                opt_g.zero_grad(set_to_none=True)
                bad_in_a_row += 1
                skipped_total += 1
                if info.main:
                    bar.write(f"step {step}: non-finite loss or gradient, step skipped ({bad_in_a_row} in a row)")
                if bad_in_a_row >= cfg.max_bad_steps:
                    raise TrainingError(
                        f"{bad_in_a_row} consecutive non-finite steps at step {step}: lower train.lr or check the data"
                    )
            step += 1
            bar.update(1)
            final = step == cfg.steps or _out_of_time(deadline, step, cfg.log_every, info, device)
            if info.main and (step % cfg.log_every == 0 or final):
                now = time.perf_counter()
                rate = (step - step_log) / max(now - t_log, 1e-9)
                t_log, step_log = now, step
                last = {
                    "step": step,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "skipped_steps": skipped_total,
                    "steps_per_s": rate,
                    "audio_s_per_s": rate * audio_per_step,
                }
                last.update({f"loss/{k}": v for k, v in _floats({**parts, **d_parts}).items()})
                last.update(_floats(stats))
                metrics_file.write(json.dumps(last) + "\n")
                metrics_file.flush()
                for k, v in last.items():
                    if k != "step":
                        writer.add_scalar(k, v, step)
                bar.set_postfix(loss=f"{last.get('loss/total', float('nan')):.3f}", rate=f"{rate:.2f}/s")
            if info.main and (step % cfg.valid_every == 0 or final):
                vals = validate(codec, loss_fn, valid_ds, cfg, device, run_dir / "samples" / f"step_{step:08d}")
                record = {"step": step, **{f"valid/{k}": v for k, v in vals.items()}}
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                for k, v in record.items():
                    if k != "step":
                        writer.add_scalar(k, v, step)
                last.update(record)
            if step % cfg.checkpoint_every == 0 or final:
                if info.main:
                    save_checkpoint(
                        run_dir,
                        step,
                        codec,
                        _unwrap(disc),
                        opt_g,
                        opt_d,
                        {
                            "recipe": to_dict(recipe),
                            "model_meta": {"recipe": recipe.name, "rotcodec_version": __version__},
                        },
                        keep=cfg.keep_checkpoints,
                    )
                if info.world_size > 1:
                    dist.barrier()
            if final:
                break
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if metrics_file is not None:
            metrics_file.close()
    return last


def _has_checkpoints(run_dir: Path) -> bool:
    root = run_dir / "checkpoints"
    return (root / "latest").exists() or any(p.is_dir() for p in root.glob("step_*"))


def _resume_point(run_dir: Path, recipe: Recipe) -> Path | None:
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
    try:
        verify_checkpoint(ckpt)
    except CheckpointError as exc:
        raise CheckpointError(damaged_message(ckpt, exc)) from None
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


def _load_init(codec: Codec, init: str) -> None:
    """Copy the weights of model file `init` into `codec`, or raise a one-line error. A branch the recipe
    adds to the loaded weights (the harmonic source) keeps its own init."""
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
    missing = [k for k in sorted(set(ours) - set(theirs)) if not k.startswith("harmonic.")]
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
    codec.load_state_dict(theirs, strict=False)


def _out_of_time(deadline: float | None, step: int, every: int, info: DistInfo, device: torch.device) -> bool:
    """Whether train.max_minutes has run out, checked every `every` steps; under DDP rank 0's clock decides
    for all ranks, so they stop at the same step."""
    if deadline is None or step % every:
        return False
    late = time.monotonic() > deadline
    if info.world_size == 1:
        return late
    flag = torch.tensor(float(late), device=device)
    dist.broadcast(flag, 0)
    return bool(flag)


def _unwrap(m: nn.Module | None) -> nn.Module | None:
    return getattr(m, "module", m)


@torch.no_grad()
def validate(
    codec: Codec, loss_fn: GeneratorLoss, valid_ds: Any, cfg: Any, device: torch.device, sample_dir: Path
) -> dict[str, float]:
    """Reconstruction losses at full bitrate on fixed validation crops, plus the one-stage mel loss and the
    latent's effective dimension (`diagnostics`); writes a few reconstructions."""
    codec.eval()
    sums: dict[str, float] = {}
    count = 0
    loader = DataLoader(valid_ds, batch_size=cfg.batch_size, num_workers=0)
    for i, wav in enumerate(loader):
        if i >= cfg.valid_batches:
            break
        wav = wav.to(device)
        out = codec(wav)
        _, parts = loss_fn(out.audio.float(), wav, harmonic=out.harmonic)
        _, one_stage = loss_fn(codec(wav, n_q=1).audio.float(), wav)  # equal to `mel`: extra stages unused
        dims = torch.tensor(float(latent_effective_dims(out.latent)), device=device)  # _floats stacks on one device
        extra = {"mel_nq1": one_stage["mel"], "latent_dims": dims}
        vq = {k: v for k, v in out.stats.items() if k.startswith("vq/")}
        for k, v in _floats({**parts, **vq, **extra}).items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        if i == 0 and cfg.audio_samples > 0:
            sample_dir.mkdir(parents=True, exist_ok=True)
            for j in range(min(cfg.audio_samples, wav.shape[0])):
                sr = codec.sample_rate
                save_audio(sample_dir / f"{j}_input.wav", wav[j].cpu().numpy(), sr, force=True)
                save_audio(
                    sample_dir / f"{j}_decoded.wav", out.audio[j].float().clamp(-1, 1).cpu().numpy(), sr, force=True
                )
    codec.train()
    return {k: v / max(count, 1) for k, v in sums.items()}
