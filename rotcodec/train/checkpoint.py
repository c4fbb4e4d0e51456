"""Training checkpoints without pickle: safetensors for every tensor, JSON for everything else.

Layout of `RUN/checkpoints/step_00001000/`:
- `model.safetensors` + `model.json`: the codec, loadable by `rotcodec.models.io.load_model` (and `--init`);
- `state.safetensors`: discriminator weights, optimizer moments, RNG states;
- `state.json`: step, optimizer hyper-parameters, counters, rotcodec version.
A checkpoint is written into a temporary folder and renamed, then `RUN/checkpoints/latest` (a text file
naming it) is replaced atomically: a run killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..models.io import save_model


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not match the run."""


def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            key = f"{prefix}.{idx}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    disc: nn.Module | None,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer | None,
    extra: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Write checkpoint `step` atomically and prune old ones (keeping `keep`). Returns its folder."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_", dir=root))
    try:
        save_model(model, tmp / "model", extra_meta={"step": step, **extra.get("model_meta", {})})
        tensors, meta = _optimizer_tensors(opt_g, "opt_g")
        meta_all: dict[str, Any] = {"opt_g": meta}
        if opt_d is not None and disc is not None:
            t_d, m_d = _optimizer_tensors(opt_d, "opt_d")
            tensors.update(t_d)
            meta_all["opt_d"] = m_d
            tensors.update({f"disc.{k}": v.detach().cpu().contiguous() for k, v in disc.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        save_file({k: v.clone() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        info = {"step": step, "rotcodec_version": __version__, "optim": meta_all, **extra}
        (tmp / "state.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / ".latest.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, root / "latest")
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder `RUN/checkpoints/latest` names, or None when the run has no checkpoint yet."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def load_checkpoint(
    path: Path,
    model: nn.Module,
    disc: nn.Module | None,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer | None,
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote into the given objects; returns `state.json`'s content."""
    try:
        info = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
        weights = load_file(str(path / "model.safetensors"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    weights = {k: v for k, v in weights.items() if k in model.state_dict()}
    model.load_state_dict(weights, strict=True)
    _restore_optimizer(opt_g, "opt_g", tensors, info["optim"]["opt_g"])
    if disc is not None and opt_d is not None and "opt_d" in info["optim"]:
        disc.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("disc.")})
        _restore_optimizer(opt_d, "opt_d", tensors, info["optim"]["opt_d"])
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if states:
            torch.cuda.set_rng_state_all(states)
    return info
