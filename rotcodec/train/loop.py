"""The training step loop: one process, or one rank of a torchrun/DDP job.

    rotcodec train recipes/speech16k.yaml --run-dir runs/speech16k [--set train.steps=2000] [--resume]
    torchrun --nproc-per-node 4 -m rotcodec.cli.main train recipes/speech16k.yaml --run-dir runs/x

Rank 0 logs (`metrics.jsonl`, TensorBoard, progress bar), validates and checkpoints. Data order depends only
on (seed, step), so a resumed run sees exactly the batches the killed run would have seen.

`train` builds the run (`setup`: process, start point, run folder, models), then `_run_steps` repeats
`_train_step` (discriminator, then generator update) and hands each step to `_RunLog`, `validate` and
`_save` as their intervals come round.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
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
from .checkpoint import save_checkpoint
from .diagnostics import latent_effective_dims
from .recipe import Recipe, TrainConfig
from .setup import DistInfo, Models, TrainingError, build_models, load_init, prepare_run_dir, setup_process, start_point
from .stopping import RUN_ON, SIGNALLED, StopRequest, should_stop


def lr_at(step: int, cfg: Any) -> float:
    """Linear warm-up, then cosine decay to lr · final_lr_ratio (a pure function of the step: no state)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    floor = cfg.final_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


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
    cfg = recipe.train
    run_dir = Path(run_dir)
    info, device = setup_process(cfg)
    ckpt, start = start_point(run_dir, recipe, resume, info)
    if start >= cfg.steps:
        # Nothing to train: say so instead of returning silently (the CLI prints it).
        return {"step": start, "finished": True, "train.steps": cfg.steps}
    codec = Codec(recipe.model)
    if cfg.init_fresh and init is None and ckpt is None:
        raise TrainingError("train.init_fresh keeps parts fresh from --init weights: give --init MODEL")
    if init is not None and ckpt is None:
        # before the run folder is made: a bad --init leaves nothing behind
        load_init(codec, init, cfg.init_fresh)
    if info.main:
        prepare_run_dir(run_dir, recipe, start, restart=resume and ckpt is None)
    models = build_models(codec, recipe, device, info, ckpt, start)
    return _run_steps(_Run(recipe, run_dir, info, device, models, resume), start, quiet)


@dataclass
class _Run:
    """A run built and ready for its first step; `resume` is what the caller asked for."""

    recipe: Recipe
    run_dir: Path
    info: DistInfo
    device: torch.device
    models: Models
    resume: bool


def _run_steps(run: _Run, step: int, quiet: bool) -> dict[str, Any]:
    """Train from `step` until train.steps or train.max_minutes; returns the last logged metrics."""
    cfg, info, device, models = run.recipe.train, run.info, run.device, run.models
    train_ds, valid_ds = build_datasets(run.recipe.data)
    if info.main and train_ds.skipped:
        print(f"warning: {len(train_ds.skipped)} unreadable file(s) skipped", flush=True)
    batches = iter(StepBatches(train_ds, cfg.batch_size, run.recipe.data.num_workers, info, step))
    amp = amp_enabled(cfg, device)
    log = _RunLog(run, step, quiet)
    guard = _NonFiniteGuard(cfg.max_bad_steps)
    last: dict[str, Any] = {}
    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes > 0 else None
    halt = RUN_ON
    try:
        with StopRequest() as stop:
            while step < cfg.steps:
                waited = time.perf_counter()
                wav = next(batches)
                log.data_wait += time.perf_counter() - waited
                out = _train_step(models, wav.to(device, non_blocking=True), step, run.recipe, amp)
                guard.check(out.finite, step, log.bar.write if info.main else None)
                step += 1
                log.bar.update(1)
                halt = should_stop(deadline, stop, step, cfg.log_every, info, device)
                final = step == cfg.steps or halt != RUN_ON
                if info.main and (step % cfg.log_every == 0 or final):
                    last = log.train_row(step, out, guard.skipped)
                # a signalled stop skips the last validation: it should end within seconds
                if info.main and (step % cfg.valid_every == 0 or (final and halt != SIGNALLED)):
                    samples = run.run_dir / "samples" / f"step_{step:08d}"
                    vals = validate(models.codec, models.loss_fn, valid_ds, cfg, device, samples)
                    last.update(log.valid_row(step, vals))
                if step % cfg.checkpoint_every == 0 or final:
                    _save(run, step)
                if final:
                    break
    finally:
        log.close()
    if halt == SIGNALLED:
        if info.main:
            print(f"stopped by a signal after step {step}: checkpoint saved; continue with --resume", flush=True)
        raise KeyboardInterrupt
    return last


@dataclass
class _StepResult:
    """One step's outcome: `losses` are the generator's terms plus the discriminator's ("disc"), 0-d tensors
    still on the device; `stats` the codec's (codebook usage, quantization error, ...)."""

    lr: float
    finite: bool
    grad_norm: torch.Tensor
    losses: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]


def amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the step runs under bf16 autocast: train.amp on CUDA, on the CPU only with train.cpu_amp."""
    return cfg.amp == "bf16" and (device.type == "cuda" or (device.type == "cpu" and cfg.cpu_amp))


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


def _train_step(m: Models, wav: torch.Tensor, step: int, recipe: Recipe, amp: bool) -> _StepResult:
    """One update of step `step` on `wav` [batch, channels, time]: the discriminator first (from
    train.adversarial_start), then the generator, whose update is dropped when its loss or gradient is not
    finite."""
    cfg = recipe.train
    lr = lr_at(step, cfg)
    for group in m.opt_g.param_groups:
        group["lr"] = lr
    # A fixed low-discrepancy sequence picks the envelope steps: the same on every rank and on resume.
    envelope = (step * 0.6180339887498949) % 1.0 < cfg.envelope_prob
    lock = (step * 0.4142135623730950) % 1.0 < cfg.phase_lock_prob  # an independent sequence (sqrt 2 - 1)
    with _autocast(wav.device, amp):
        audio, vq_loss, stats, harmonic, locked = m.gen(wav, envelope, lock)
    d_parts: dict[str, torch.Tensor] = {}
    if m.disc is not None and step >= cfg.adversarial_start:
        d_parts["disc"], adv_terms = _discriminator_step(m, wav, audio, recipe, amp)
        total, parts = m.loss_fn(audio.float(), wav, vq_loss, *adv_terms, harmonic=harmonic, locked=locked)
    else:
        total, parts = m.loss_fn(audio.float(), wav, vq_loss, harmonic=harmonic, locked=locked)
    m.opt_g.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(
        m.codec.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    )
    # The NaN guard is the loop's one per-step host sync: a non-finite step must not reach the weights.
    finite = bool(torch.isfinite(total) & torch.isfinite(grad_norm))
    if finite:
        m.opt_g.step()
    else:
        m.opt_g.zero_grad(set_to_none=True)
    return _StepResult(lr, finite, grad_norm, {**parts, **d_parts}, stats)


def _discriminator_step(
    m: Models, wav: torch.Tensor, audio: torch.Tensor, recipe: Recipe, amp: bool
) -> tuple[torch.Tensor, tuple[Any, Any, Any]]:
    """Update the discriminator on real `wav` against the generator's `audio` (detached), both [batch,
    channels, time]; returns its loss and, for the generator's adversarial and feature-matching terms, its
    logits and features on `audio` (with gradient) and its features on `wav`."""
    cfg = recipe.train
    disc, opt_d = m.disc, m.opt_d
    with _autocast(wav.device, amp):
        real_logits, _ = disc(wav)
        fake_logits, _ = disc(audio.detach())
        d_loss = discriminator_loss(real_logits, fake_logits, recipe.loss.adversarial)
    opt_d.zero_grad(set_to_none=True)
    d_loss.float().backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.grad_clip)
    opt_d.step()
    with _autocast(wav.device, amp):
        fake_logits, fake_feats = disc(audio)
        with torch.no_grad():
            _, real_feats = disc(wav)
    return d_loss.detach(), (fake_logits, fake_feats, real_feats)


@dataclass
class _NonFiniteGuard:
    """Counts skipped (non-finite) steps; `limit` of them in a row end the run."""

    limit: int
    in_a_row: int = 0
    skipped: int = 0

    def check(self, finite: bool, step: int, say: Callable[[str], object] | None) -> None:
        if finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.skipped += 1
        if say is not None:
            say(f"step {step}: non-finite loss or gradient, step skipped ({self.in_a_row} in a row)")
        if self.in_a_row >= self.limit:
            raise TrainingError(
                f"{self.in_a_row} consecutive non-finite steps at step {step}: lower train.lr or check the data"
            )


class _RunLog:
    """Rank 0's records: `metrics.jsonl` rows and TensorBoard scalars. Every rank has the progress bar
    (shown on rank 0 only, unless `quiet`)."""

    def __init__(self, run: _Run, step: int, quiet: bool) -> None:
        from tqdm import tqdm

        cfg, info = run.recipe.train, run.info
        self.writer: Any = None
        self.file: Any = None
        if info.main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged after its checkpoint, as _cut_metrics does for rows.
            self.writer = SummaryWriter(str(run.run_dir / "tensorboard"), purge_step=step + 1 if run.resume else None)
            self.file = open(run.run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()
        # Seconds of audio one step trains on, over all ranks.
        self.audio_per_step = cfg.batch_size * info.world_size * run.recipe.data.segment_seconds
        self.bar = tqdm(total=cfg.steps, initial=step, disable=quiet or not info.main, unit="step", dynamic_ncols=True)
        self.t_log, self.step_log = time.perf_counter(), step
        self.data_wait = 0.0  # seconds the loop waited for batches since the last row
        self.device = run.device

    def train_row(self, step: int, out: _StepResult, skipped: int) -> dict[str, Any]:
        """Log step `step`'s losses and stats with the throughput since the previous row; returns the row."""
        now = time.perf_counter()
        window = max(now - self.t_log, 1e-9)
        rate = (step - self.step_log) / window
        # The share of the window spent waiting for data: above a few percent the loader starves the step
        # (raise data.num_workers). Each step syncs with the device, so on a GPU this is real idle time.
        data_wait, self.data_wait = self.data_wait / window, 0.0
        self.t_log, self.step_log = now, step
        row = {
            "step": step,
            "lr": out.lr,
            "grad_norm": float(out.grad_norm),
            "skipped_steps": skipped,
            "steps_per_s": rate,
            "audio_s_per_s": rate * self.audio_per_step,
            "data_wait_frac": data_wait,
        }
        busy = _gpu_busy(self.device)
        if busy is not None:
            row["gpu_busy_frac"] = busy
        row.update({f"loss/{k}": v for k, v in _floats(out.losses).items()})
        row.update(_floats(out.stats))
        self._write(row)
        self.bar.set_postfix(loss=f"{row.get('loss/total', float('nan')):.3f}", rate=f"{rate:.2f}/s")
        return row

    def valid_row(self, step: int, vals: dict[str, float]) -> dict[str, Any]:
        """Log `validate`'s results for step `step` as `valid/` keys; returns the row."""
        row = {"step": step, **{f"valid/{k}": v for k, v in vals.items()}}
        self._write(row)
        return row

    def _write(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        for k, v in row.items():
            if k != "step":
                self.writer.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.file is not None:
            self.file.close()


def _gpu_busy(device: torch.device) -> float | None:
    """The share of the driver's last sample period (1/6 to 1 s) in which some kernel ran on `device`, from
    NVML (`torch.cuda.utilization`; None off CUDA or without the `nvidia-ml-py` package). Busy is not full:
    a launch-bound step keeps the GPU busy with small kernels."""
    if device.type != "cuda":
        return None
    try:
        return torch.cuda.utilization(device) / 100.0
    except Exception:  # noqa: BLE001 - no NVML here: the metric is optional
        return None


def _save(run: _Run, step: int) -> None:
    """Rank 0 writes checkpoint `step`; every rank waits for it before the next step."""
    m, recipe = run.models, run.recipe
    if run.info.main:
        save_checkpoint(
            run.run_dir,
            step,
            m.codec,
            _unwrap(m.disc),
            m.opt_g,
            m.opt_d,
            {
                "recipe": to_dict(recipe),
                "model_meta": {"recipe": recipe.name, "rotcodec_version": __version__},
            },
            keep=recipe.train.keep_checkpoints,
        )
    if run.info.world_size > 1:
        dist.barrier()


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
