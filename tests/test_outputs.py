"""`rotcodec.outputs`: atomic outputs, exclusive final names without force, permissions from the umask, cleanup
on errors and SIGTERM; and that every writer in the package goes through it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rotcodec.outputs import OutputExistsError, atomic_file, atomic_path, write_bytes


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_exclusive_without_force_and_replace_with_it(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    write_bytes(target, b"first", force=False)
    with pytest.raises(OutputExistsError, match="already exists"):
        write_bytes(target, b"second", force=False)
    assert target.read_bytes() == b"first"
    write_bytes(target, b"third", force=True)
    assert target.read_bytes() == b"third"
    assert _names(tmp_path) == ["x.bin"]  # no temp files left by the refused write


def test_a_name_that_appears_while_writing_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with pytest.raises(OutputExistsError):
        with atomic_file(target, "wb", force=False) as f:
            f.write(b"mine")
            target.write_bytes(b"someone else's")  # another writer won the race
    assert target.read_bytes() == b"someone else's" and _names(tmp_path) == ["x.bin"]


def _race(path: str, tag: int, barrier, results) -> None:  # noqa: ANN001
    try:
        with atomic_file(path, "wb", force=False) as f:
            f.write(b"writer %d" % tag)
            barrier.wait(timeout=30)  # all four are past any existence check before one publishes
        results.put(tag)
    except OutputExistsError:
        results.put(-1)


def test_concurrent_writers_to_one_new_path_exactly_one_wins(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    target = tmp_path / "out.rcq"
    procs = [ctx.Process(target=_race, args=(str(target), i, barrier, results)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcome = sorted(results.get(timeout=5) for _ in procs)
    winners = [t for t in outcome if t >= 0]
    assert outcome.count(-1) == 3 and len(winners) == 1
    assert target.read_bytes() == b"writer %d" % winners[0]
    assert _names(tmp_path) == ["out.rcq"]


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.txt") as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("boom")
    assert _names(tmp_path) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        target = tmp_path / "p.bin"
        write_bytes(target, b"x")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == mode


def test_every_writer_makes_umask_files(tmp_path: Path, umask_022: None) -> None:
    """eval/ablate reports, manifests, model files, .rcq, audio and CLI outputs: all 0644 under umask 022 (they
    were 0600 where a writer forgot to chmod its mkstemp file)."""
    from rotcodec.audio import save_audio
    from rotcodec.bitstream import CodingMode, RcqHeader
    from rotcodec.bitstream.format import write_rcq
    from rotcodec.data.manifest import Entry, write_manifest
    from rotcodec.eval.report import atomic_write_text, write_csv
    from rotcodec.inference import atomic_output

    atomic_write_text(tmp_path / "summary.md", "# hi\n")
    write_csv([{"a": 1, "b": 2.0}], tmp_path / "results.csv")
    wav = tmp_path / "a.wav"
    save_audio(wav, np.zeros(1600, np.float32), 16000)
    write_manifest([Entry(path=str(wav), duration=0.1, sample_rate=16000, channels=1)], tmp_path / "m.tsv")
    header = RcqHeader(
        model_id="t",
        model_hash=bytes(16),
        model_sample_rate=16000,
        original_sample_rate=16000,
        channels=1,
        num_samples=320,
        hop_length=320,
        codebook_sizes=(4,),
        coding_mode=CodingMode.PLAIN,
        chunk_frames=8,
    )
    write_rcq(tmp_path / "x.rcq", header, np.zeros((1, 1, 1), np.int64))
    with atomic_output(tmp_path / "cli.rcq") as f:
        f.write(b"data")
    for p in tmp_path.iterdir():
        assert p.stat().st_mode & 0o777 == 0o644, p.name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_model_files_follow_the_umask(tmp_path: Path, umask_022: None) -> None:
    from rotcodec.models import Codec, CodecConfig, save_model
    from rotcodec.quantize import RVQConfig

    q = RVQConfig(dim=8, n_q=1, codebook_size=4, kmeans_init=False)
    cfg = CodecConfig(base_channels=4, strides=[2, 4, 5, 8], latent_dim=8, dilations=[1], quantizer=q)
    for p in save_model(Codec(cfg).eval(), tmp_path / "m"):
        assert p.stat().st_mode & 0o777 == 0o644


def test_sigterm_removes_the_temp_file(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from rotcodec.outputs import atomic_file, terminate_as_interrupt
        try:
            with terminate_as_interrupt(), atomic_file(sys.argv[1], "wb") as f:
                f.write(b"partial")
                print("ready", flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.bin")], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    assert len(_names(tmp_path)) == 1  # the temp file
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    assert _names(tmp_path) == []
