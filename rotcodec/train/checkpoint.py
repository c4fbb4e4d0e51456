"""Training checkpoints without pickle: safetensors for every tensor, JSON for everything else.

Layout of `RUN/checkpoints/step_00001000/`:
- `model.safetensors` + `model.json`: the codec, loadable by `rotcodec.models.io.load_model` (and `--init`);
- `state.safetensors`: discriminator weights, optimizer moments, RNG states;
- `state.json`: step, optimizer hyper-parameters, counters, rotcodec version;
- `checksums.json`: SHA-256 of each file above, written last.
A checkpoint is written into a temporary folder and renamed, then `RUN/checkpoints/latest` (a text file
naming it) is replaced atomically: a run killed at any moment leaves the previous checkpoint intact, and
the temporary folder such a kill leaves behind is removed when the run next starts (`remove_stale_temporaries`).
`load_checkpoint` verifies the checksums before trusting anything (`verify_checkpoint`): a flipped byte in
a weight would otherwise load without complaint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..models.io import file_sha256, save_model


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not match the run."""


CHECKSUMS = "checksums.json"
CHECKSUMS_FORMAT = "rotcodec-checkpoint-checksums"
REQUIRED_FILES = ("model.safetensors", "model.json", "state.safetensors", "state.json")
_STEP_NAME = re.compile(r"step_\d+")
_TMP_PREFIX = ".tmp_"
# What tempfile.mkdtemp(prefix=_TMP_PREFIX) names a folder: nothing else in checkpoints/ is ever removed.
_TMP_NAME = re.compile(re.escape(_TMP_PREFIX) + r"[a-z0-9_]+")


def _write_checksums(folder: Path) -> None:
    files = {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != CHECKSUMS}
    text = json.dumps({"format": CHECKSUMS_FORMAT, "files": files}, indent=1, sort_keys=True)
    (folder / CHECKSUMS).write_text(text + "\n")


def verify_checkpoint(path: Path) -> None:
    """Raise `CheckpointError` naming the file unless every file of checkpoint `path` matches the SHA-256
    in its `checksums.json` (a checkpoint without one is treated as damaged: nothing vouches for it)."""
    manifest = path / CHECKSUMS
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is missing")
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{manifest} is missing (checkpoint damaged or written before checksums)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{manifest}: unreadable ({exc})") from None
    files = data.get("files") if isinstance(data, dict) and data.get("format") == CHECKSUMS_FORMAT else None
    if not isinstance(files, dict):
        raise CheckpointError(f"{manifest}: not a checkpoint checksum file")
    for name in REQUIRED_FILES:
        if name not in files:
            raise CheckpointError(f"{manifest} does not list {name}")
    for name, digest in sorted(files.items()):
        # The manifest is data: it must not make us read outside the checkpoint.
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{manifest}: bad file name {name!r}")
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing")
        if file_sha256(file) != digest:
            raise CheckpointError(f"{file}: checksum mismatch (damaged file)")


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
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
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
        _write_checksums(tmp)  # last: a folder with a complete manifest was written completely
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


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary folders a kill during `save_checkpoint` left in `RUN/checkpoints` (only names
    `save_checkpoint` gives them; links are left alone). Call it only while no process writes this run.
    Returns the folders removed."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    stale = sorted(p for p in root.iterdir() if _TMP_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder `RUN/checkpoints/latest` names, or None when the run has no checkpoint yet. The pointer
    may only name a `step_N` folder of this run (never a path elsewhere). Does not verify the checksums:
    `load_checkpoint` does."""
    root = run_dir / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{pointer}: unreadable ({exc})") from None
    if not _STEP_NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise CheckpointError(f"{pointer} must name a step_N folder of this run, not {shown!r}")
    path = root / name
    if not (path / "state.json").is_file():
        raise CheckpointError(damaged_message(path, CheckpointError(f"{pointer} names {name}, which is missing")))
    return path


def previous_intact(path: Path) -> Path | None:
    """The newest checkpoint of the same run older than `path` whose checksums hold, or None."""
    older = sorted((p for p in path.parent.glob("step_*") if p.is_dir() and p.name < path.name), reverse=True)
    for candidate in older:
        try:
            verify_checkpoint(candidate)
        except CheckpointError:
            continue
        return candidate
    return None


def damaged_message(path: Path, exc: CheckpointError) -> str:
    """`exc`, plus how to resume from the newest intact earlier checkpoint where there is one."""
    previous = previous_intact(path)
    if previous is None:
        return f"{exc}; no earlier intact checkpoint in {path.parent}"
    return (
        f"{exc}; to resume from {previous.name}, the newest intact earlier checkpoint, "
        f"write {previous.name} into {path.parent / 'latest'} and run again with --resume"
    )


def require_intact(path: Path) -> None:
    """`verify_checkpoint`, its error extended by `damaged_message` (the way back to an intact checkpoint)."""
    try:
        verify_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(damaged_message(path, exc)) from None


def checkpoint_step(path: Path) -> int:
    """The step `state.json` of checkpoint `path` records (after `verify_checkpoint`)."""
    try:
        step = json.loads((path / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / 'state.json'}: no step ({exc})") from None
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path / 'state.json'}: bad step {step!r}")
    return step


def load_checkpoint(
    path: Path,
    model: nn.Module,
    disc: nn.Module | None,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer | None,
) -> dict[str, Any]:
    """Verify checkpoint `path`, then restore everything `save_checkpoint` wrote into the given objects;
    returns `state.json`'s content. Any problem is a `CheckpointError` naming the checkpoint."""
    verify_checkpoint(path)
    try:
        info = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
        weights = load_file(str(path / "model.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    # Intact files that still do not fit (edited by hand, or another model): say which part, not a traceback.
    try:
        optim = info["optim"]
        if "opt_g" not in optim:
            raise KeyError("optim.opt_g")
        if "rng.torch" not in tensors:
            raise KeyError("rng.torch")
        weights = {k: v for k, v in weights.items() if k in model.state_dict()}
        model.load_state_dict(weights, strict=True)
        _restore_optimizer(opt_g, "opt_g", tensors, optim["opt_g"])
        if disc is not None and opt_d is not None and "opt_d" in optim:
            disc.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("disc.")})
            _restore_optimizer(opt_d, "opt_d", tensors, optim["opt_d"])
        torch.set_rng_state(tensors["rng.torch"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: no {exc.args[0]} entry in the checkpoint's state") from None
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
        msg = " ".join(str(exc).split())
        raise CheckpointError(f"{path}: does not fit this run's model or optimizer ({_shorten(msg)})") from None
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if states:
            torch.cuda.set_rng_state_all(states)
    return info


def _shorten(text: str, limit: int = 300) -> str:
    """`text` cut at a word boundary with a marker, never mid-word."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."
