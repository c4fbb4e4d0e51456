"""Model files: `NAME.safetensors` (weights, never pickle) + `NAME.json` (config, versions, checksum).

JSON fields: format ("rotcodec-model"), format_version, rotcodec_version, config (CodecConfig as a dict),
weights_file, weights_sha256 (integrity checksum of the .safetensors file), model_hash (the model's identity, see
`model_hash`; checked on load; `.rcq` files carry its first 16 bytes), has_code_counts, has_context_counts,
extra (caller's metadata). Optional code-frequency tables (for entropy coding) live in the safetensors file
beside the state dict (whose keys never clash: they all start with `encoder.`, `quantizer.` or `decoder.`):
- `code_counts`: each row's first `Codec.table_sizes` counts, one row after the other (files written before
  stop 36 hold them padded to `[rows, largest alphabet]`, which still loads);
- `context_counts`: each envelope row's `[k, k]` counts of a symbol after each symbol of the previous frame,
  one row after the other (`Codec.context_sizes`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..config import ConfigError, from_dict, to_dict
from ..outputs import atomic_path
from .codec import Codec, CodecConfig

FORMAT = "rotcodec-model"
FORMAT_VERSION = 1
CODE_COUNTS_KEY = "code_counts"
CONTEXT_COUNTS_KEY = "context_counts"
TRAINING_ONLY_SUFFIX = ".embed_avg"  # EMA codebook sums: rebuilt on load, never used to encode or decode


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, or does not match its config."""


@dataclass
class ModelFile:
    """A loaded model: the codec (eval mode), the JSON metadata and the optional code-count tables."""

    codec: Codec
    meta: dict[str, Any]
    code_counts: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    context_counts: torch.Tensor | None = None


def context_length(codec: Codec) -> int:
    """Length of the flat context counts: each envelope row's `[k, k]` (`Codec.context_sizes`)."""
    return sum(k * k for k in codec.context_sizes())


def unpack_context(codec: Codec, flat: np.ndarray) -> list[np.ndarray]:
    """Flat context counts -> one `[k, k]` array per envelope row (`Codec.context_sizes`)."""
    out, at = [], 0
    for k in codec.context_sizes():
        out.append(np.asarray(flat[at : at + k * k]).reshape(k, k))
        at += k * k
    return out


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def has_skip_code(codec: Codec) -> bool:
    """Whether code 0 of every RVQ stage is the zero vector (`rotcodec export` makes it so): a trimmed last
    stage then codes "leave this frame as it is" with symbol 0."""
    stages = codec.quantizer.stages
    return bool(stages) and all(not stage.factorised and not bool(stage.codebook[0].any()) for stage in stages)


def model_hash(codec: Codec) -> str:
    """sha256 (hex) over the canonical JSON config and every state-dict tensor (name, dtype, shape, bytes):
    equal hashes mean the codec decodes identically. Stable across save/load, inference-only files included
    (training-only EMA sums are left out), and so are encoder-only settings (the pitch tracker's lookahead) and
    tiers' phase settings left at their defaults, so files a model wrote before such a setting existed still
    find it."""
    # Through from_dict, as loading does: a config built with edges [0, 500] and one read back as [0.0, 500.0]
    # are the same model.
    config = to_dict(from_dict(type(codec.config), to_dict(codec.config)))
    if config.get("pitch"):
        config["pitch"] = {k: v for k, v in config["pitch"].items() if k != "lookahead"}
    # Tiers without phase rows hash as they did before those settings existed; the output phase gate,
    # min_stages and priority only change what an encoder sends.
    for tier in [config.get("envelope"), *config.get("envelope_tiers", [])]:
        if not tier:
            continue
        if not tier.get("phase_harmonics"):
            tier.pop("phase_harmonics", None)
            tier.pop("phase_levels", None)
        if not tier.get("output_phase_edges_hz"):
            tier.pop("output_phase_edges_hz", None)
            tier.pop("output_phase_levels", None)
        tier.pop("output_phase_gate_db", None)
        tier.pop("min_stages", None)
        tier.pop("priority", None)
    if not config.get("decoder_source"):  # models from before the setting existed keep their hash
        config.pop("decoder_source", None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, t in sorted(codec.state_dict().items()):
        if name.endswith(TRAINING_ONLY_SUFFIX):
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@torch.no_grad()
def round_weights_(codec: Codec, dtype: torch.dtype) -> Codec:
    """Round the codec's float parameters and buffers in place to `dtype` precision (kept in their own
    dtype), so the codec in memory encodes exactly like one loaded from a file stored in `dtype`."""
    for t in codec.state_dict().values():  # state-dict tensors share storage with the module's
        if t.is_floating_point():
            t.copy_(t.to(dtype))
    return codec


def _atomic_write(target: Path, write: Any) -> None:
    with atomic_path(target) as tmp:  # readable as the umask allows: model files are meant to be shared
        write(tmp)


def save_model(
    codec: Codec,
    path: str | Path,
    extra_meta: dict[str, Any] | None = None,
    code_counts: torch.Tensor | None = None,
    inference_only: bool = False,
    storage_dtype: torch.dtype | None = None,
    context_counts: torch.Tensor | None = None,
) -> tuple[Path, Path]:
    """Write `NAME.safetensors` and `NAME.json` atomically (path with or without extension); returns both
    paths. code_counts: optional `[code rows, largest alphabet]` code-frequency tables (`Codec.table_sizes`).
    inference_only: leave out the EMA codebook sums (halves a shipped model; fine-tuning from it restarts them
    from the codebook).
    storage_dtype: store float tensors in this dtype (float16 halves the file again; loading casts back to
    float32). The codec is first rounded in place to that precision (`round_weights_`), so `model_hash` and
    the in-memory codec both match what loads. context_counts: optional flat counts of each envelope row's symbol
    after each symbol of the previous frame (`context_length` long; needs code_counts)."""
    weights_path, json_path = _paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    if storage_dtype is not None:
        if storage_dtype not in STORAGE_DTYPES.values():
            raise ModelFileError(f"unsupported storage dtype {storage_dtype} (use one of {list(STORAGE_DTYPES)})")
        round_weights_(codec, storage_dtype)
    tensors = {
        k: v.detach()
        .cpu()
        .to(storage_dtype if storage_dtype and v.is_floating_point() else v.dtype)
        .contiguous()
        .clone()
        for k, v in codec.state_dict().items()
    }
    if inference_only:  # EMA sums are training state (as large as the codebooks); loading rebuilds them
        tensors = {k: v for k, v in tensors.items() if not k.endswith(TRAINING_ONLY_SUFFIX)}
    if code_counts is not None:
        expected = (len(codec.table_sizes()), max(codec.table_sizes()))
        if tuple(code_counts.shape) != expected:
            raise ModelFileError(f"code_counts must have shape {expected}, got {tuple(code_counts.shape)}")
        # Flat, each row only as wide as its alphabet: a band gain row pads 5 counts to 1024 otherwise.
        counts = torch.cat([row[:k] for row, k in zip(code_counts.detach().cpu(), codec.table_sizes(), strict=True)])
        if counts.numel() and int(counts.max()) < 2**31 and int(counts.min()) >= 0:
            counts = counts.to(torch.int32)  # half the bytes
        tensors[CODE_COUNTS_KEY] = counts.contiguous()
    if context_counts is not None:
        if code_counts is None or tuple(context_counts.shape) != (context_length(codec),):
            raise ModelFileError(
                f"context_counts must have shape ({context_length(codec)},) beside code_counts, "
                f"got {tuple(context_counts.shape)}"
            )
        tensors[CONTEXT_COUNTS_KEY] = context_counts.detach().cpu().to(torch.int32).contiguous().clone()
    _atomic_write(weights_path, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rotcodec_version": __version__,
        "config": to_dict(codec.config),
        "weights_file": weights_path.name,
        "weights_sha256": file_sha256(weights_path),
        "model_hash": model_hash(codec),
        "has_code_counts": code_counts is not None,
        "has_context_counts": context_counts is not None,
        "extra": dict(extra_meta or {}),
    }
    text = json.dumps(meta, indent=2, sort_keys=True)
    _atomic_write(json_path, lambda tmp: Path(tmp).write_text(text + "\n"))
    return weights_path, json_path


def _read_meta(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise ModelFileError(f"model metadata not found: {json_path}")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{json_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{json_path}: not a rotcodec model file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{json_path}: format version {version!r} is not supported (max {FORMAT_VERSION})")
    return meta


def read_model(path: str | Path, device: str | torch.device = "cpu") -> ModelFile:
    """Load `NAME.safetensors` + `NAME.json` (path with or without extension), verifying the checksum,
    config and state dict. Raises `ModelFileError` on any problem. The codec is returned in eval mode."""
    weights_path, json_path = _paths(path)
    meta = _read_meta(json_path)
    if not weights_path.is_file():
        raise ModelFileError(f"model weights not found: {weights_path}")
    if file_sha256(weights_path) != meta.get("weights_sha256"):
        raise ModelFileError(f"{weights_path}: checksum mismatch (file corrupt or not the one {json_path.name} names)")
    if not isinstance(meta.get("config"), dict):
        raise ModelFileError(f"{json_path}: no model config")
    try:
        cfg = from_dict(CodecConfig, meta["config"])
    except (ConfigError, ValueError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{json_path}: invalid config ({exc})") from None
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{weights_path}: unreadable safetensors file ({exc})") from None
    code_counts = tensors.pop(CODE_COUNTS_KEY, None)
    code_counts = None if code_counts is None else code_counts.to(torch.int64)  # stored as int32 when they fit
    context_counts = tensors.pop(CONTEXT_COUNTS_KEY, None)
    context_counts = None if context_counts is None else context_counts.to(torch.int64)
    codec = Codec(cfg)
    sizes = codec.table_sizes()
    if code_counts is not None and code_counts.dim() == 1 and code_counts.numel() == sum(sizes):
        code_counts = torch.stack(
            [torch.nn.functional.pad(row, (0, max(sizes) - len(row))) for row in code_counts.split(sizes)]
        )
    if code_counts is not None and tuple(code_counts.shape) != (len(sizes), max(sizes)):
        raise ModelFileError(f"{weights_path}: code tables of shape {tuple(code_counts.shape)} do not fit the config")
    if context_counts is not None and (code_counts is None or tuple(context_counts.shape) != (context_length(codec),)):
        raise ModelFileError(
            f"{weights_path}: context tables of shape {tuple(context_counts.shape)} do not fit the config"
        )
    try:
        codec.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())[:300]
        raise ModelFileError(f"{weights_path}: weights do not match the config ({msg})") from None
    if model_hash(codec) != meta.get("model_hash"):
        raise ModelFileError(f"{json_path}: model_hash does not match the weights and config it describes")
    codec.to(device).eval()
    return ModelFile(codec, meta, code_counts, dict(meta.get("extra") or {}), context_counts)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Codec:
    """Load a codec saved by `save_model` (eval mode). Raises `ModelFileError` on any problem."""
    return read_model(path, device).codec
