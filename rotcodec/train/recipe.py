"""A training recipe: one YAML file (optionally `base:` + overrides) -> `Recipe` of config dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, apply_overrides, from_dict, load_yaml
from ..data.dataset import DataConfig
from ..losses.adversarial import LossConfig
from ..models.codec import CodecConfig
from ..models.discriminators import DiscriminatorConfig

COMPILE_MODES = ("none", "rotation", "model")
AMP_MODES = ("none", "bf16")


@dataclass
class TrainConfig:
    """Step loop settings.

    steps: total generator steps. batch_size: per process. lr/betas/weight_decay: AdamW for the generator;
    disc_lr: for the discriminators. warmup_steps then cosine decay to lr * final_lr_ratio.
    adversarial_start: step at which discriminators and adversarial losses switch on (0 = from the start).
    grad_clip: max global grad norm (0 disables). log_every/valid_every/checkpoint_every: in steps.
    keep_checkpoints: how many step checkpoints to keep. max_bad_steps: consecutive non-finite steps
    tolerated before the run stops. amp: "bf16" autocast on CUDA ("none" disables). cpu_amp: also on the
    CPU, where it pays on CPUs with native bf16 (AMX or AVX-512 BF16: x1.18 audio-s/s on this project's
    2-core machine, `docs/results/cpu_training_speed/`) and is slower on others; off by default, so CPU runs
    compute in float32 unless a recipe asks.
    max_minutes: wall-clock budget (0 = none): once spent, the run validates, saves a checkpoint and stops
    early (checked every log_every steps), e.g. to fit a GPU lease.
    threads: torch CPU threads (0 = torch's default). valid_batches: validation batches per check.
    audio_samples: validation reconstructions written as WAV per check. envelope_prob: share of training
    steps whose output passes through the envelope rows' gains (measured against the input, as the encoder
    would) before the losses, so the decoder learns what the gains leave to it; models with `envelope` only.
    phase_lock_prob: share of training steps whose harmonic source is phase-locked to the input as the
    model's phase tiers send it (`Codec.forward(lock=True)`), the steps `loss.phase` trains on; models with
    pitch and an envelope tier with `phase_harmonics` only.
    init_fresh: parts of the codec (`encoder`, `quantizer`, `decoder`, `harmonic`) that keep their fresh
    initialisation when `--init` loads the other weights, e.g. to retrain the encoder through a new quantizer
    against a trained decoder (`recipes/ablation_rotation_vs_ste_speech16k.yaml`).
    compile: "none"; "rotation" runs every stage's rotation trick as one torch.compile'd kernel each way;
    "model" also compiles the encoder and decoder (`nn.Module.compile`, weights and checkpoints unchanged).
    For GPUs, where the small model's step is bound by kernel launches; the first steps include compiling.
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-4
    disc_lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 0.0
    warmup_steps: int = 100
    final_lr_ratio: float = 0.1
    adversarial_start: int = 0
    grad_clip: float = 100.0
    log_every: int = 10
    valid_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    max_bad_steps: int = 20
    amp: str = "bf16"
    cpu_amp: bool = False
    max_minutes: float = 0.0
    threads: int = 0
    valid_batches: int = 4
    audio_samples: int = 2
    envelope_prob: float = 0.0
    phase_lock_prob: float = 0.0
    init_fresh: list[str] = field(default_factory=list)
    compile: str = "none"
    seed: int = 0
    device: str = "auto"


@dataclass
class Recipe:
    name: str = "run"
    model: CodecConfig = field(default_factory=CodecConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None, data: dict | None = None) -> Recipe:
    """Recipe from a YAML file (or a dict) plus `key=value` overrides. The data's sample rate and channel
    count always follow the model's (they are not set twice)."""
    raw = dict(data) if data is not None else load_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    model = raw.get("model") or {}
    data_section = dict(raw.get("data") or {})
    for key in ("sample_rate", "channels"):
        if key in data_section:
            raise ValueError(f"data.{key} follows model.{key}; set model.{key} instead")
        if key in model:
            data_section[key] = model[key]
    raw["data"] = data_section
    recipe = from_dict(Recipe, raw, "recipe")
    if recipe.loss.harmonic > 0 and recipe.model.pitch is None:
        raise ConfigError("loss.harmonic trains the harmonic source: set model.pitch too, or loss.harmonic=0")
    _check_train_ranges(recipe.train)
    if not 0.0 <= recipe.train.envelope_prob <= 1.0:
        raise ConfigError(f"train.envelope_prob must be in [0, 1], got {recipe.train.envelope_prob}")
    if recipe.train.envelope_prob > 0 and recipe.model.envelope is None:
        raise ConfigError("train.envelope_prob needs model.envelope")
    if recipe.train.amp not in AMP_MODES:
        raise ConfigError(f"train.amp must be one of {AMP_MODES}, got {recipe.train.amp!r}")
    if recipe.train.compile not in COMPILE_MODES:
        raise ConfigError(f"train.compile must be one of {COMPILE_MODES}, got {recipe.train.compile!r}")
    if not 0.0 <= recipe.train.phase_lock_prob <= 1.0:
        raise ConfigError(f"train.phase_lock_prob must be in [0, 1], got {recipe.train.phase_lock_prob}")
    if recipe.train.phase_lock_prob > 0 and not any(t.phase_harmonics for t in recipe.model.envelopes):
        raise ConfigError("train.phase_lock_prob needs an envelope tier with phase_harmonics")
    if recipe.loss.phase > 0 and recipe.train.phase_lock_prob == 0:
        raise ConfigError("loss.phase trains only on phase-locked steps: set train.phase_lock_prob too")
    return recipe


# (field, smallest allowed value): below these the loop does nothing, divides by zero or never logs.
_AT_LEAST = {
    "steps": 1,
    "batch_size": 1,
    "log_every": 1,
    "valid_every": 1,
    "checkpoint_every": 1,
    "keep_checkpoints": 1,
    "max_bad_steps": 1,
    "warmup_steps": 0,
    "adversarial_start": 0,
    "threads": 0,
    "valid_batches": 0,
    "audio_samples": 0,
}


def _check_train_ranges(cfg: TrainConfig) -> None:
    for name, low in _AT_LEAST.items():
        value = getattr(cfg, name)
        if value < low:
            raise ConfigError(f"train.{name} must be at least {low}, got {value}")
    for name in ("lr", "disc_lr"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"train.{name} must be positive, got {getattr(cfg, name)}")
    for name in ("grad_clip", "max_minutes", "weight_decay", "final_lr_ratio"):
        if not getattr(cfg, name) >= 0:
            raise ConfigError(f"train.{name} must be at least 0, got {getattr(cfg, name)}")
