"""Model registry: where codec model files live and how a name, a path or an `.rcq` header finds one.

A model is a pair `NAME.safetensors` + `NAME.json` (see `rotcodec.models.io`). A bare NAME is looked up,
in this order, in:

1. the bundled folder `rotcodec/pretrained/` (the package ships `speech16k` there),
2. every folder listed in `$ROTCODEC_MODELS` (separated by the OS path separator),
3. the user cache `$XDG_CACHE_HOME/rotcodec` (default `~/.cache/rotcodec`).

The first folder holding NAME wins, so a bundled name always means the bundled files; the same name in a
later folder is shadowed (`rotcodec models` says so). The current directory is never searched: files found
there by accident must not replace a model silently. A local file is named by a path instead: anything with
a directory separator, a leading `.` or `~`, or a `.safetensors`/`.json` suffix (`./speech16k`,
`runs/x/model.safetensors`).

Only the small JSON files are read here; weights are loaded by `rotcodec.inference.load_model`.
An `.rcq` file names its model by id (the file stem) and fingerprint: the first 16 bytes of the model's
content hash (`rotcodec.models.model_hash`, docs/format.md), which the JSON records as `model_hash` and
`read_model` verifies. The JSON's `weights_sha256` is only the weights file's integrity checksum.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "speech16k"
# The bundled model for each kind of content, as `rotcodec compress` picks them without --model.
MODEL_FOR = {"speech": DEFAULT_MODEL, "music": "music24k"}
CHOOSE_MODEL_HINT = f"--model {MODEL_FOR['speech']} or --model {MODEL_FOR['music']}"
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
    """First 16 bytes of the model's content hash, from the JSON's `model_hash` (b"" if missing)."""
    digest = meta.get("model_hash")
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
    """(folder, source) pairs searched for models by name, in priority order (absolute paths).

    Absolute, so that an entry's `base` names the same files whatever the working directory is later and
    is treated as a path, never as a name, when handed back to `resolve_model`."""
    dirs = [(bundled_dir(), "bundled")]
    for part in os.environ.get("ROTCODEC_MODELS", "").split(os.pathsep):
        if part.strip():
            dirs.append((Path(part).expanduser().absolute(), "local"))
    dirs.append((cache_dir().expanduser().absolute(), "local"))
    return dirs


def _origin(folder: Path) -> str:
    """Where a search folder comes from, for messages."""
    if folder == bundled_dir():
        return "bundled"
    if folder == cache_dir().expanduser().absolute():
        return "cache"
    return "$ROTCODEC_MODELS"


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


def _all_models() -> list[ModelEntry]:
    """Every complete model in `search_dirs()`, in priority order, shadowed names included."""
    out: list[ModelEntry] = []
    seen: set[Path] = set()
    for folder, source in search_dirs():
        if not folder.is_dir() or folder.resolve() in seen:  # a folder listed twice is no shadowing
            continue
        seen.add(folder.resolve())
        for weights in sorted(folder.glob("*.safetensors")):
            entry = _entry(weights.with_suffix(""), source)
            if entry is not None:
                out.append(entry)
    return out


def list_models() -> list[ModelEntry]:
    """The model each name resolves to: every model in `search_dirs()`, a name in a later folder skipped
    when an earlier folder already holds it (see `shadowed_models`)."""
    seen: set[str] = set()
    out: list[ModelEntry] = []
    for entry in _all_models():
        if entry.name not in seen:
            seen.add(entry.name)
            out.append(entry)
    return out


def shadowed_models() -> list[tuple[ModelEntry, ModelEntry]]:
    """(hidden, used) pairs: models a bare name does not reach because an earlier folder has that name."""
    first: dict[str, ModelEntry] = {}
    hidden: list[tuple[ModelEntry, ModelEntry]] = []
    for entry in _all_models():
        if entry.name in first:
            hidden.append((entry, first[entry.name]))
        else:
            first[entry.name] = entry
    return hidden


def search_report() -> list[str]:
    """Lines for `rotcodec models` to print on stderr: the folders a bare name is looked up in, in order,
    any model that a name does not reach because an earlier folder shadows it, and models in the current
    directory (not searched: they are used only when named by a path)."""
    from ..bitstream.header import escape_text

    lines = ["a bare model name resolves to the first of these folders that holds it (never the current directory):"]
    for i, (folder, _) in enumerate(search_dirs(), 1):
        state = "" if folder.is_dir() else " (missing)"
        lines.append(f"  {i}. {_origin(folder):<17} {escape_text(str(folder))}{state}")
    for hidden, used in shadowed_models():
        lines.append(
            f"shadowed: {escape_text(str(hidden.weights_path))} (the name '{escape_text(used.name)}' means "
            f"{escape_text(str(used.weights_path))}; pass the path to use the other one)"
        )
    try:
        here: Path | None = Path.cwd()
    except OSError:  # the working directory was removed
        here = None
    if here is not None and all(here != folder for folder, _ in search_dirs()):
        for weights in sorted(here.glob("*.safetensors")):  # the mix-up this rule prevents: say it out loud
            if _entry(weights.with_suffix(""), "path") is not None:
                name = escape_text(weights.stem)
                lines.append(f"not searched: ./{name} in the current directory (pass --model ./{name} to use it)")
    lines.append("to use a model file elsewhere, pass its path: --model ./NAME or --model DIR/NAME.safetensors")
    return lines


def _looks_like_path(text: str) -> bool:
    """Whether a --model argument names a file rather than a registry name."""
    seps = {"/", os.sep, os.altsep} - {None}
    return any(sep in text for sep in seps) or text.endswith((".safetensors", ".json")) or text.startswith((".", "~"))


def resolve_model(name_or_path: str | os.PathLike | None = None) -> ModelEntry:
    """Find a model by path (with or without `.safetensors`/`.json`) or by registry name.

    A path (a `PathLike`, or a string with a directory separator, a leading `.` or `~`, or a model-file
    suffix) names files; any other string is a name looked up in `search_dirs()` only, never in the
    current directory. None means `DEFAULT_MODEL`. Raises ModelNotFoundError with a one-line hint.
    """
    from ..bitstream.header import escape_text

    target = DEFAULT_MODEL if name_or_path is None else os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(target):
        path = Path(target).expanduser()
        base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
        # absolute: `load_model` hands `base` back here, and "./x" would otherwise come back as the name "x"
        base = base.absolute()
        if base.with_name(base.name + ".safetensors").is_file() or base.with_name(base.name + ".json").is_file():
            entry = _entry(base, "path")
            if entry is None:
                raise ModelNotFoundError(
                    f"{escape_text(target)}: not a complete rotcodec model (need NAME.safetensors + NAME.json)"
                )
            return entry
        raise ModelNotFoundError(f"{escape_text(target)}: model not found (need NAME.safetensors + NAME.json there)")
    for entry in list_models():
        if entry.name == target:
            return entry
    known = ", ".join(escape_text(e.name) for e in list_models()) or "none installed"
    hint = "pass a model file path or set $ROTCODEC_MODELS"
    here = Path(target + ".safetensors")
    if here.is_file():  # the user probably meant the file beside them; say how to ask for it
        hint = f"the current directory is not searched: pass ./{escape_text(target)} to use {escape_text(str(here))}"
    raise ModelNotFoundError(f"model '{escape_text(target)}' not found (known models: {known}); {hint}")


def find_by_fingerprint(fingerprint: bytes, model_id: str | None = None) -> ModelEntry | None:
    """The known model whose fingerprint equals `fingerprint` (a model named `model_id` first).

    Shadowed models count too: the fingerprint names the model exactly, whatever folder order says."""
    entries = _all_models()
    entries.sort(key=lambda e: e.name != model_id)  # stable: search order within each group
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
    "search_report",
    "shadowed_models",
]
