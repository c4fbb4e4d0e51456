"""recipes/data/pack_subset.py: a size-capped subset with its manifest, as FLAC or Ogg Opus, that the training
data loader reads back; bad arguments are one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rotcodec.data import write_synthetic_corpus
from rotcodec.data.dataset import DataConfig, build_datasets
from rotcodec.data.manifest import prepare_manifest, read_manifest

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "data" / "pack_subset.py"
SR = 16000


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """12 two-second files of 4 speakers; spk3 is the validation speaker."""
    write_synthetic_corpus(tmp_path / "corpus", 12, 2.0, SR, seed=1)
    out = tmp_path / "m.tsv"
    prepare_manifest([tmp_path / "corpus"], out, valid_fraction=0.0, test_fraction=0.0, split_by="file")
    rows = out.read_text().splitlines()
    head, body = rows[0], rows[1:]
    cols = head.split("\t")
    split, speaker = cols.index("split"), cols.index("speaker")
    fixed = []
    for row in body:
        f = row.split("\t")
        f[split] = "valid" if f[speaker] == "spk3" else "train"
        fixed.append("\t".join(f))
    out.write_text("\n".join([head, *fixed]) + "\n")
    return out


def pack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_flac_subset_keeps_every_speaker_and_the_audio(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "flac"
    done = pack(str(manifest), str(out), "--max-mb", "0.15", "--valid-files", "2")
    assert done.returncode == 0, done.stderr
    entries = read_manifest(out / "manifest.tsv")
    train = [e for e in entries if e.split == "train"]
    assert {e.speaker for e in train} == {"spk0", "spk1", "spk2"}
    assert len(train) < 9  # the budget left some files out
    assert sum(e.split == "valid" for e in entries) == 2
    for e in entries:
        info = sf.info(e.path)
        assert e.path.endswith(".flac") and info.samplerate == SR and info.frames == int(round(e.duration * SR))


@pytest.mark.skipif(shutil.which("opusenc") is None, reason="opus-tools not installed")
def test_opus_subset_is_smaller_and_the_loader_reads_it(manifest: Path, tmp_path: Path) -> None:
    flac, opus = tmp_path / "flac", tmp_path / "opus"
    assert pack(str(manifest), str(flac), "--max-mb", "10").returncode == 0
    done = pack(str(manifest), str(opus), "--max-mb", "10", "--opus-kbps", "24")
    assert done.returncode == 0, done.stderr
    entries = read_manifest(opus / "manifest.tsv")
    train = [e for e in entries if e.split == "train"]
    assert len(train) == 9 and all(e.path.endswith(".opus") for e in train)
    assert all(e.path.endswith(".flac") for e in entries if e.split == "valid")  # scored files stay lossless

    def size(folder: Path, split: str) -> int:
        return sum(p.stat().st_size for p in (folder / split).iterdir())

    assert size(opus, "train") < 0.5 * size(flac, "train")
    for e in train:
        x, sr = sf.read(e.path)
        assert sr == SR and abs(len(x) - e.duration * SR) <= 0.02 * SR
    train_ds, valid_ds = build_datasets(DataConfig(sources=[str(opus / "manifest.tsv")], sample_rate=SR))
    assert len(train_ds.entries) == 9 and not train_ds.skipped
    crop = train_ds[0]
    assert crop.shape == (1, SR) and float(crop.abs().max()) > 0.01


def test_bad_arguments_are_one_line_errors(manifest: Path, tmp_path: Path) -> None:
    missing = pack(str(tmp_path / "nope.tsv"), str(tmp_path / "a"))
    assert missing.returncode == 1 and missing.stderr.startswith("error:") and len(missing.stderr.splitlines()) == 1
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    taken = pack(str(manifest), str(busy))
    assert taken.returncode == 1 and "not an empty folder" in taken.stderr
    assert (busy / "keep.txt").read_text() == "mine"


def test_an_encoder_failure_skips_files_in_one_line_and_an_empty_subset_is_an_error(
    manifest: Path, tmp_path: Path
) -> None:
    fake = tmp_path / "bin" / "opusenc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho first >&2\necho second >&2\nexit 3\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "opus"
    done = pack(str(manifest), str(out), "--opus-kbps", "24", env=env)
    assert done.returncode == 1 and "no training file could be packed" in done.stderr
    skipped = [ln for ln in done.stderr.splitlines() if ln.startswith("skipped ")]
    assert len(skipped) == 9 and all("exit code 3: first | second" in ln for ln in skipped)
    assert not out.exists() and not list(tmp_path.glob(".opus.*"))  # no partial output


def test_excerpts_spread_the_budget_over_more_files(manifest: Path, tmp_path: Path) -> None:
    """With --excerpt-seconds each packed file is that long a stretch of its source (seeded: the same each
    run), so the same budget holds more files."""
    whole, cut, again = tmp_path / "whole", tmp_path / "cut", tmp_path / "again"
    assert pack(str(manifest), str(whole), "--max-mb", "0.15").returncode == 0
    done = pack(str(manifest), str(cut), "--max-mb", "0.15", "--excerpt-seconds", "0.5")
    assert done.returncode == 0, done.stderr
    assert pack(str(manifest), str(again), "--max-mb", "0.15", "--excerpt-seconds", "0.5").returncode == 0
    entries = read_manifest(cut / "manifest.tsv")
    train = [e for e in entries if e.split == "train"]
    assert len(train) > sum(e.split == "train" for e in read_manifest(whole / "manifest.tsv"))
    sources = {}
    for e in read_manifest(manifest):
        x, _ = sf.read(e.path, dtype="int16")
        sources[e.path] = x
    for e in entries:
        x, _ = sf.read(e.path, dtype="int16")
        assert len(x) == SR // 2 and np.array_equal(sf.read(again / Path(e.path).relative_to(cut), dtype="int16")[0], x)
        # a stretch of one of the sources, sample for sample (16-bit FLAC of 16-bit audio at the same rate)
        assert any(np.array_equal(x, s[i : i + len(x)]) for s in sources.values() for i in np.flatnonzero(s == x[0])), (
            e.path
        )
