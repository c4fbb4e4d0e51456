"""Find audio files and write train/valid/test manifests (`rotcodec prepare`).

Sources are folders (searched recursively), glob patterns ("data/**/*.flac"), single audio files, or
manifest files (.tsv / .csv / .jsonl with a `path` column and optional duration [s], sample_rate [Hz],
channels, split, speaker). Splits are assigned by hashing the speaker (or file key) with the seed, so adding
files never moves existing ones between splits.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rotcodec.audio import AudioError, read_info
from rotcodec.outputs import OutputError, atomic_file

AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64"}
)
MANIFEST_SUFFIXES = frozenset({".tsv", ".csv", ".jsonl"})
SPLITS = ("train", "valid", "test")
COLUMNS = ("path", "duration", "sample_rate", "channels", "split", "speaker")


class ManifestError(ValueError):
    """A source or manifest that cannot be used."""


class UnreadableAudioWarning(UserWarning):
    """An audio file was skipped because it could not be read."""


@dataclass
class Entry:
    """One audio file. `key` is the stable identity hashed for file-level splits (not written out)."""

    path: str
    duration: float | None = None  # seconds
    sample_rate: int | None = None  # Hz
    channels: int | None = None
    split: str | None = None
    speaker: str | None = None
    key: str = ""


def _opt(value: object, cast: type) -> object:
    return None if value in (None, "") else cast(value)


def read_manifest(path: str | os.PathLike) -> list[Entry]:
    """Read a .tsv/.csv/.jsonl manifest; relative paths are resolved against the manifest's folder."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise ManifestError(f"{path}: manifest must end in one of {sorted(MANIFEST_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if suffix == ".jsonl":
        try:
            rows = [json.loads(ln) for ln in lines]
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: invalid JSON line ({exc})") from None
    else:
        rows = list(csv.DictReader(lines, delimiter="\t" if suffix == ".tsv" else ","))
    entries = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("path"):
            raise ManifestError(f"{path}: row {i} has no 'path'")
        p = Path(row["path"])
        try:
            entry = Entry(
                path=str(p if p.is_absolute() else path.parent / p),
                duration=_opt(row.get("duration"), float),  # type: ignore[arg-type]
                sample_rate=_opt(row.get("sample_rate"), int),  # type: ignore[arg-type]
                channels=_opt(row.get("channels"), int),  # type: ignore[arg-type]
                split=_opt(row.get("split"), str),  # type: ignore[arg-type]
                speaker=_opt(row.get("speaker"), str),  # type: ignore[arg-type]
                key=str(row["path"]),
            )
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"{path}: row {i}: bad value ({exc})") from None
        if entry.split is not None and entry.split not in SPLITS:
            raise ManifestError(f"{path}: row {i}: split {entry.split!r} not in {list(SPLITS)}")
        entries.append(entry)
    return entries


def _walk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def find_audio(sources: Iterable[str | os.PathLike]) -> list[Entry]:
    """Expand folders, globs, audio files and manifests into entries (sorted within each source).

    A source that does not exist and matches no glob raises ManifestError (a typo must not silently
    shrink the corpus); a folder without audio only warns.
    """
    entries: list[Entry] = []
    for src in sources:
        s = str(src)
        p = Path(s)
        if p.is_dir():
            files = _walk(p)
            if not files:
                warnings.warn(f"{p}: folder holds no audio files", UserWarning, stacklevel=2)
            entries += [Entry(str(f), key=f"{p.resolve().name}/{f.relative_to(p).as_posix()}") for f in files]
        elif p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            entries += read_manifest(p)
        elif p.is_file():
            entries.append(Entry(s, key=p.name))
        elif glob.has_magic(s):
            prefix = re.split(r"[*?\[]", s, maxsplit=1)[0]
            base = Path(prefix) if prefix.endswith(os.sep) or not prefix else Path(prefix).parent
            files = sorted(Path(f) for f in glob.glob(s, recursive=True) if Path(f).suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                raise ManifestError(f"glob {s!r} matched no audio files")
            for f in files:
                try:
                    key = f"{base.resolve().name}/{f.resolve().relative_to(base.resolve()).as_posix()}"
                except ValueError:
                    key = f.name
                entries.append(Entry(str(f), key=key))
        else:
            raise ManifestError(f"{s}: no such file, folder or glob match")
    return entries


def speaker_of(path: str, speaker_regex: str | None = None) -> str:
    """Speaker label: first non-empty group of `speaker_regex` searched in the absolute path, else the
    name of the file's parent folder."""
    abspath = Path(path).resolve().as_posix()
    if speaker_regex:
        m = re.search(speaker_regex, abspath)
        if m:
            named = m.groupdict().get("speaker")
            groups = [named] if named else [g for g in m.groups() if g]
            if groups:
                return groups[0]
            return m.group(0)
    return Path(abspath).parent.name or "unknown"


def hash_unit(text: str, seed: int) -> float:
    """Deterministic uniform number in [0, 1) from (seed, text); stable across runs and machines."""
    digest = hashlib.sha1(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(key: str, valid_fraction: float, test_fraction: float, seed: int) -> str:
    """Split for `key`: test if its hash < test_fraction, valid if < test + valid fraction, else train."""
    u = hash_unit(key, seed)
    if u < test_fraction:
        return "test"
    return "valid" if u < test_fraction + valid_fraction else "train"


def probe(entries: Sequence[Entry]) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Fill duration/sample_rate/channels from file headers. Returns (readable entries, skipped
    [(path, reason)]); each skipped file also raises an UnreadableAudioWarning."""
    ok, skipped = [], []
    for e in entries:
        if e.duration is not None and e.sample_rate is not None and e.channels is not None:
            if os.path.isfile(e.path):  # metadata from a manifest: only check the file is still there
                ok.append(e)
                continue
        try:
            info = read_info(e.path)
        except AudioError as exc:
            warnings.warn(f"skipping unreadable audio: {exc}", UnreadableAudioWarning, stacklevel=2)
            skipped.append((e.path, str(exc)))
            continue
        ok.append(
            dataclasses.replace(
                e, duration=info.frames / info.samplerate, sample_rate=info.samplerate, channels=info.channels
            )
        )
    return ok, skipped


def write_manifest(entries: Sequence[Entry], out: str | os.PathLike, force: bool = False) -> None:
    """Write entries atomically as .tsv/.csv/.jsonl (by suffix). Paths inside the manifest's folder are
    stored relative to it, others absolute."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise ManifestError(f"{out}: manifest must end in one of {sorted(MANIFEST_SUFFIXES)}")
    if out.exists() and not force:
        raise ManifestError(f"{out}: already exists (use --force to overwrite)")
    if not out.parent.is_dir():
        raise ManifestError(f"{out}: folder {out.parent} does not exist")
    base = out.parent.resolve()
    rows = []
    for e in entries:
        p = Path(e.path).resolve()
        rel = p.relative_to(base).as_posix() if p.is_relative_to(base) else p.as_posix()
        dur = None if e.duration is None else round(e.duration, 4)
        rows.append(
            {
                "path": rel,
                "duration": dur,
                "sample_rate": e.sample_rate,
                "channels": e.channels,
                "split": e.split,
                "speaker": e.speaker,
            }
        )
    buf = io.StringIO()
    if suffix == ".jsonl":
        buf.writelines(json.dumps(r) + "\n" for r in rows)
    else:
        writer = csv.DictWriter(buf, COLUMNS, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    try:
        with atomic_file(out, "w", force) as fh:  # without force the name is created exclusively
            fh.write(buf.getvalue())
    except OutputError as exc:
        raise ManifestError(str(exc)) from None


@dataclass
class PrepareReport:
    """What `prepare_manifest` wrote: files/seconds/speakers per split and the skipped files."""

    files: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    speakers: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [
            f"{s}: {self.files.get(s, 0)} files, {self.seconds.get(s, 0.0) / 3600:.3f} h, "
            f"{self.speakers.get(s, 0)} speakers"
            for s in SPLITS
        ]
        return "; ".join(parts) + f"; skipped {len(self.skipped)} unreadable"


def prepare_manifest(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    split_by: str = "speaker",
    speaker_regex: str | None = None,
    seed: int = 0,
    hold_out_speakers: Sequence[str] = (),
    force: bool = False,
) -> PrepareReport:
    """Scan `sources`, read headers, assign deterministic splits and write the manifest `out`.

    split_by="speaker" hashes speaker labels (no speaker in two splits), "file" hashes file keys.
    Speakers in `hold_out_speakers` always go to "test". Speakers already given in a source manifest are kept.
    """
    if split_by not in ("speaker", "file"):
        raise ManifestError(f"split_by must be 'speaker' or 'file', got {split_by!r}")
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise ManifestError(
            f"need 0 <= valid, test fractions and valid+test < 1, got {valid_fraction}, {test_fraction}"
        )
    if speaker_regex:
        try:
            re.compile(speaker_regex)
        except re.error as exc:
            raise ManifestError(f"bad --speaker-regex {speaker_regex!r}: {exc}") from None
    if Path(out).exists() and not force:  # fail before the (possibly long) scan
        raise ManifestError(f"{out}: already exists (use --force to overwrite)")
    out_resolved = Path(out).resolve()
    if any(Path(s).resolve() == out_resolved for s in sources):
        raise ManifestError(f"{out}: output would overwrite one of the sources")
    entries, skipped = probe(find_audio(sources))
    if not entries:
        raise ManifestError(f"no readable audio files in {list(map(str, sources))} ({len(skipped)} skipped)")
    held = set(hold_out_speakers)
    seen = set()
    report = PrepareReport(skipped=skipped)
    spk_per_split: dict[str, set[str]] = {s: set() for s in SPLITS}
    for e in entries:
        e.speaker = e.speaker or speaker_of(e.path, speaker_regex)
        seen.add(e.speaker)
        if e.speaker in held:
            e.split = "test"
        else:
            key = e.speaker if split_by == "speaker" else (e.key or Path(e.path).name)
            e.split = split_of(key, valid_fraction, test_fraction, seed)
        report.files[e.split] = report.files.get(e.split, 0) + 1
        report.seconds[e.split] = report.seconds.get(e.split, 0.0) + (e.duration or 0.0)
        spk_per_split[e.split].add(e.speaker)
    report.speakers = {s: len(v) for s, v in spk_per_split.items()}
    empty = [s for s, f in (("valid", valid_fraction), ("test", test_fraction)) if f > 0 and s not in report.files]
    if empty:
        warnings.warn(
            f"no files landed in {' or '.join(empty)}: too few speakers/files for the fraction "
            "(try --split-by file, a larger fraction or --hold-out-speakers)",
            UserWarning,
            stacklevel=2,
        )
    missing = sorted(held - seen)
    if missing:
        warnings.warn(f"--hold-out-speakers not found in the data: {', '.join(missing)}", UserWarning, stacklevel=2)
    write_manifest(entries, out, force=force)
    return report
