"""`rotcodec train` when things go wrong: damaged checkpoints, foreign `latest` pointers, recipes out of range,
and the CLI's promise that every error is one line on stderr and exit 1."""

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rotcodec.cli.main import main
from rotcodec.config import ConfigError
from rotcodec.models.codec import Codec
from rotcodec.train.checkpoint import CHECKSUMS, CheckpointError, _write_checksums, load_checkpoint
from rotcodec.train.loop import train
from rotcodec.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"
# Four steps, a checkpoint every two: step_00000002 and step_00000004, one metrics row per step.
SHORT = ["train.steps=4", "train.checkpoint_every=2", "train.log_every=1", "train.valid_every=1000"]
STEP2, STEP4 = "step_00000002", "step_00000004"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    train(load_recipe(TINY, SHORT), run, quiet=True)
    return run


@pytest.fixture
def run(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished 4-step run, free to damage."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(["train", str(TINY), "--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("rotcodec train: error: "), err
    return lines[0]


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def resume(run: Path, capsys: pytest.CaptureFixture, steps: int = 6, extra: tuple[str, ...] = ()) -> tuple:
    return cli(["--run-dir", str(run), "--resume", *sets(*SHORT, f"train.steps={steps}", *extra)], capsys)


def flip_tensor_bytes(path: Path) -> None:
    """Flip a few bytes inside the tensor data (past the safetensors header): the file still parses."""
    raw = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    for i in range(start + 100, start + 104):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    load_file(path)  # still a valid safetensors file: only the checksum can tell


def train_steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss/total" in r]


@pytest.mark.parametrize("part", ["model.safetensors", "state.safetensors"])
def test_flipped_tensor_bytes_are_caught_and_the_message_leads_back(
    run: Path, part: str, capsys: pytest.CaptureFixture
) -> None:
    flip_tensor_bytes(run / "checkpoints" / STEP4 / part)
    line = one_error_line(*resume(run, capsys)[::2])
    assert f"{STEP4}/{part}: checksum mismatch" in line
    assert f"write {STEP2} into" in line  # the way back to the newest intact checkpoint
    # Following the message resumes from step 2, and the rows the damaged checkpoint's steps logged go.
    (run / "checkpoints" / "latest").write_text(STEP2 + "\n")
    code, out, err = resume(run, capsys)
    assert code == 0, err
    assert train_steps(run) == [1, 2, 3, 4, 5, 6]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000006"


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_broken_safetensors_files_are_one_line_errors(run: Path, damage: str, capsys: pytest.CaptureFixture) -> None:
    path = run / "checkpoints" / STEP4 / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x07" * 4096}[damage])
    line = one_error_line(*resume(run, capsys)[::2])
    assert "model.safetensors: checksum mismatch" in line


def test_a_checkpoint_without_checksums_is_not_trusted(run: Path, capsys: pytest.CaptureFixture) -> None:
    (run / "checkpoints" / STEP4 / CHECKSUMS).unlink()
    line = one_error_line(*resume(run, capsys)[::2])
    assert f"{STEP4}/{CHECKSUMS} is missing" in line


@pytest.mark.parametrize("drop", ["optim", "opt_g"])
def test_state_without_its_optimizer_entry_is_one_line(run: Path, drop: str, capsys: pytest.CaptureFixture) -> None:
    # Checksums rewritten to match: the file is intact as written, but incomplete.
    ckpt = run / "checkpoints" / STEP4
    state = json.loads((ckpt / "state.json").read_text())
    del (state if drop == "optim" else state["optim"])[drop]
    (ckpt / "state.json").write_text(json.dumps(state))
    _write_checksums(ckpt)
    line = one_error_line(*resume(run, capsys)[::2])
    assert "entry in the checkpoint's state" in line and drop in line


@pytest.mark.parametrize(
    "overrides",
    [
        ("model.latent_dim=8", "model.quantizer.dim=8"),  # shapes differ
        ("model.quantizer.estimator=ste",),  # same shapes: only the config tells them apart
    ],
)
def test_a_checkpoint_of_another_model_is_refused(
    run: Path, overrides: tuple[str, ...], capsys: pytest.CaptureFixture
) -> None:
    line = one_error_line(*resume(run, capsys, extra=overrides)[::2])
    assert "was written for another model" in line
    assert overrides[0].split("=")[0] in line


def test_the_latest_pointer_cannot_leave_its_run(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other-run"
    shutil.copytree(run, other)
    pointer = run / "checkpoints" / "latest"
    for target in (f"../../other-run/checkpoints/{STEP4}", str(other / "checkpoints" / STEP4)):
        pointer.write_text(target + "\n")
        line = one_error_line(*resume(run, capsys)[::2])
        assert "must name a step_N folder of this run" in line
    pointer.write_text("step_00000099\n")
    line = one_error_line(*resume(run, capsys)[::2])
    assert "names step_00000099, which is missing" in line and f"write {STEP4} into" in line
    pointer.unlink()  # without a pointer, --resume must not quietly start over beside the step folders
    assert "latest is missing but step folders exist" in one_error_line(*resume(run, capsys)[::2])


def test_resume_cuts_metrics_back_to_the_checkpoint(run: Path, capsys: pytest.CaptureFixture) -> None:
    # As if killed after logging steps 3-4 but before checkpoint 4 was complete, mid-way through a row.
    shutil.rmtree(run / "checkpoints" / STEP4)
    (run / "checkpoints" / "latest").write_text(STEP2 + "\n")
    assert train_steps(run) == [1, 2, 3, 4]
    logged = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(logged + '{"step": 5, "lo')
    code, _, err = resume(run, capsys, steps=5)
    assert code == 0, err
    assert train_steps(run) == [1, 2, 3, 4, 5]


def test_finished_and_missing_runs_say_so(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = (run / "metrics.jsonl").read_text()
    code, out, err = resume(run, capsys, steps=4)
    assert code == 0 and err == ""
    finished = f"{run} is already finished at step 4 (train.steps=4): nothing to do; raise train.steps with --set"
    assert out.strip().splitlines() == [finished + " to train further"]
    assert (run / "metrics.jsonl").read_text() == before
    missing = tmp_path / "nothing-here"
    line = one_error_line(*resume(missing, capsys)[::2])
    assert "does not exist" in line and not missing.exists()
    missing.mkdir()
    assert "holds no run" in one_error_line(*resume(missing, capsys)[::2])
    # A run stopped before its first checkpoint starts again from 0, saying so, with its old rows gone.
    shutil.rmtree(run / "checkpoints")
    code, out, err = resume(run, capsys, steps=2)
    assert code == 0, err
    assert out.splitlines()[0] == f"{run} has no checkpoint yet: starting it again from step 0"
    assert train_steps(run) == [1, 2]


def test_init_errors_are_one_whole_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = run / "checkpoints" / STEP4 / "model"
    args = ["--run-dir", str(tmp_path / "ft"), "--init", str(model), "--set", "train.steps=1"]
    line = one_error_line(*cli([*args, "--set", "model.latent_dim=8", "--set", "model.quantizer.dim=8"], capsys)[::2])
    assert "weights do not match the recipe's model" in line
    assert line.endswith("in the recipe")  # the message ends where it means to, not cut mid-word
    flip_tensor_bytes(model.with_suffix(".safetensors"))
    line = one_error_line(*cli(args, capsys)[::2])
    assert "checksum mismatch" in line
    line = one_error_line(*cli([*args[:3], str(tmp_path / "absent"), *args[4:]], capsys)[::2])
    assert "not found" in line
    assert not (tmp_path / "ft").exists()  # a failed --init leaves no half-made run folder


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.steps=-5", "train.steps must be at least 1"),
        ("train.steps=0", "train.steps must be at least 1"),
        ("train.batch_size=0", "train.batch_size must be at least 1"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be at least 1"),
        ("train.log_every=0", "train.log_every must be at least 1"),
        ("train.valid_every=0", "train.valid_every must be at least 1"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints must be at least 1"),
        ("train.lr=0", "train.lr must be positive"),
    ],
)
def test_recipe_values_out_of_range(override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe(TINY, [override])
    line = one_error_line(*cli(["--run-dir", str(tmp_path / "r"), "--set", override], capsys)[::2])
    assert message in line
    assert not (tmp_path / "r").exists()


def test_base_cycles_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "self.yaml").write_text("base: self.yaml\nname: self\n")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text(f"base: {TINY}\nname: b\n")
    assert load_recipe(tmp_path / "a.yaml").name == "b"  # a chain without a loop still loads
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    for name in ("self.yaml", "a.yaml"):
        with pytest.raises(ConfigError, match="loops back"):
            load_recipe(tmp_path / name)
        code = main(["train", str(tmp_path / name), "--run-dir", str(tmp_path / "r"), "--quiet"])
        assert "loops back" in one_error_line(code, capsys.readouterr().err)


def test_an_existing_run_is_one_line(run: Path, capsys: pytest.CaptureFixture) -> None:
    line = one_error_line(*cli(["--run-dir", str(run), *sets(*SHORT)], capsys)[::2])
    assert "already holds a run: pass --resume" in line


def test_load_checkpoint_verifies_by_itself(run: Path) -> None:
    # The Python API, too, refuses a damaged checkpoint (not only the CLI's --resume).
    codec = Codec(load_recipe(TINY, SHORT).model)
    opt = torch.optim.AdamW(codec.parameters())
    flip_tensor_bytes(run / "checkpoints" / STEP4 / "state.safetensors")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(run / "checkpoints" / STEP4, codec, None, opt, None)
    assert load_checkpoint(run / "checkpoints" / STEP2, codec, None, opt, None)["step"] == 2


def test_temporary_folders_a_kill_left_are_removed(run: Path, capsys: pytest.CaptureFixture) -> None:
    # A kill inside save_checkpoint leaves its mkdtemp folder; only folders of that name pattern go.
    root = run / "checkpoints"
    stale = root / ".tmp_k2x9_a0q"
    (stale / "model").mkdir(parents=True)
    (stale / "state.json").write_text("{}")
    kept = [root / ".tmp-notours", root / "notes"]
    for folder in kept:
        folder.mkdir()
    (root / ".tmp_file").write_text("not a folder")
    code, _, err = resume(run, capsys)
    assert code == 0, err
    assert not stale.exists()
    assert all(folder.is_dir() for folder in kept) and (root / ".tmp_file").is_file()
    # A run killed while writing its first checkpoint: --resume starts it again, without the leftover.
    shutil.rmtree(root)
    (root / ".tmp_first123").mkdir(parents=True)
    code, out, err = resume(run, capsys, steps=2)
    assert code == 0, err
    assert "has no checkpoint yet" in out
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002"]
