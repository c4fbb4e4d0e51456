"""Model registry: where codec model files live and how a name, a path or an `.rcq` header finds one.

A model is a pair `NAME.safetensors` + `NAME.json` (see `rotcodec.models.io`). Models are looked up, in
this order, in:

1. the bundled folder `rotcodec/pretrained/` (the package ships `speech16k` there),
2. every folder listed in `$ROTCODEC_MODELS` (separated by the OS path separator),
3. the user cache `$XDG_CACHE_HOME/rotcodec` (default `~/.cache/rotcodec`).

Only the small JSON files are read here; weights are loaded by `rotcodec.inference.load_model`.
An `.rcq` file names its model by id (the file stem) and fingerprint: the first 16 bytes of the SHA-256 of
the `.safetensors` file (docs/format.md), which the JSON records as `weights_sha256`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "speech16k"
HASH_BYTES = 16


class ModelNotFoundError(ValueError):
    """No model file matches the requested name, path or fingerprint."""


@dataclass
class ModelEntry:
    """A model known by its JSON metadata. base: path without suffix; source: bundled, local or path."""

    name: str
    base: Path
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path:
        return self.base.with_name(self.base.name + ".safetensors")

    @property
    def json_path(self) -> Path:
        return self.base.with_name(self.base.name + ".json")

    @property
    def fingerprint(self) -> bytes:
        """16-byte model fingerprint stored in `.rcq` headers (b"" if the JSON lacks a checksum)."""
        return fingerprint_from_meta(self.meta)


def fingerprint_from_meta(meta: dict[str, Any]) -> bytes:
    """First 16 bytes of the weights file's SHA-256, from the JSON's `weights_sha256` (b"" if missing)."""
    digest = meta.get("weights_sha256")
    try:
        return bytes.fromhex(digest)[:HASH_BYTES] if isinstance(digest, str) else b""
    except ValueError:
        return b""


def bundled_dir() -> Path:
    """The folder of models shipped inside the package."""
    return Path(__file__).resolve().parent


def cache_dir() -> Path:
    """The per-user model folder: `$XDG_CACHE_HOME/rotcodec`, default `~/.cache/rotcodec`."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "rotcodec"


def search_dirs() -> list[tuple[Path, str]]:
    """(folder, source) pairs searched for models, in priority order."""
    dirs = [(bundled_dir(), "bundled")]
    for part in os.environ.get("ROTCODEC_MODELS", "").split(os.pathsep):
        if part.strip():
            dirs.append((Path(part).expanduser(), "local"))
    dirs.append((cache_dir(), "local"))
    return dirs


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == "rotcodec-model" else None


def _entry(base: Path, source: str) -> ModelEntry | None:
    weights = base.with_name(base.name + ".safetensors")
    meta = _read_json(base.with_name(base.name + ".json"))
    if meta is None or not weights.is_file():
        return None
    return ModelEntry(base.name, base, source, meta)


def list_models() -> list[ModelEntry]:
    """Every model found in `search_dirs()`; a name shadowed by an earlier folder is listed once."""
    seen: set[str] = set()
    out: list[ModelEntry] = []
    for folder, source in search_dirs():
        if not folder.is_dir():
            continue
        for weights in sorted(folder.glob("*.safetensors")):
            entry = _entry(weights.with_suffix(""), source)
            if entry is not None and entry.name not in seen:
                seen.add(entry.name)
                out.append(entry)
    return out


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith((".safetensors", ".json")) or text.startswith(".")


def resolve_model(name_or_path: str | os.PathLike | None = None) -> ModelEntry:
    """Find a model by path (with or without `.safetensors`/`.json`) or by registry name.

    None means `DEFAULT_MODEL`. Raises ModelNotFoundError with a one-line hint when nothing matches.
    """
    target = DEFAULT_MODEL if name_or_path is None else os.fspath(name_or_path)
    path = Path(target).expanduser()
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    if base.with_name(base.name + ".safetensors").is_file() or base.with_name(base.name + ".json").is_file():
        entry = _entry(base, "path")
        if entry is None:
            raise ModelNotFoundError(f"{target}: not a complete rotcodec model (need NAME.safetensors + NAME.json)")
        return entry
    if not _looks_like_path(target):
        for entry in list_models():
            if entry.name == target:
                return entry
    known = ", ".join(e.name for e in list_models()) or "none installed"
    raise ModelNotFoundError(
        f"model {target!r} not found (known models: {known}); pass a model file path or set $ROTCODEC_MODELS"
    )


def find_by_fingerprint(fingerprint: bytes, model_id: str | None = None) -> ModelEntry | None:
    """The known model whose weights fingerprint equals `fingerprint` (a model named `model_id` first)."""
    entries = list_models()
    entries.sort(key=lambda e: e.name != model_id)
    for entry in entries:
        if entry.fingerprint and entry.fingerprint == fingerprint:
            return entry
    return None


__all__ = [
    "DEFAULT_MODEL",
    "ModelEntry",
    "ModelNotFoundError",
    "bundled_dir",
    "cache_dir",
    "find_by_fingerprint",
    "fingerprint_from_meta",
    "list_models",
    "resolve_model",
    "search_dirs",
]
