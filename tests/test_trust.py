"""Trust: models come from where the user says, header strings print escaped, help states defaults."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given
from hypothesis import strategies as st

from rotcodec.bitstream import RcqHeader, decode_bytes, encode_bytes
from rotcodec.bitstream.header import escape_text
from rotcodec.cli import HelpFormatter, positive_float, positive_int
from rotcodec.cli.main import main
from rotcodec.inference import load_model
from rotcodec.inference.loading import model_for_header
from rotcodec.models import Codec, CodecConfig, save_model
from rotcodec.pretrained import (
    ModelNotFoundError,
    bundled_dir,
    find_by_fingerprint,
    list_models,
    resolve_model,
    search_report,
    shadowed_models,
)
from rotcodec.quantize import RVQConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# cursor home + clear screen, a carriage return and a fake second line, a bidi override
HOSTILE = "speech16k\x1b[2J\x1b[H\rOK: all files verified\nrotcodec: done\u202e"


def is_safe_line(text: str) -> bool:
    return text.isprintable() and "\x1b" not in text


# -- escape_text --------------------------------------------------------------------------------------------
@given(st.text())
def test_escape_text_is_one_printable_line_and_loses_nothing(text: str) -> None:
    out = escape_text(text)
    assert is_safe_line(out)
    # injective: Python's own unescaping gives the original back
    assert out.encode("ascii", "backslashreplace").decode("unicode_escape") == text


@pytest.mark.parametrize("text", ["speech16k", "modèle-中文 v2", "a b.c_d-1"])
def test_escape_text_keeps_printable_names(text: str) -> None:
    assert escape_text(text) == text


def test_escape_text_shows_what_is_hidden() -> None:
    assert escape_text("a\nb\x1b[31m\u202e\\") == "a\\nb\\x1b[31m\\u202e\\\\"


# -- models come from where the user says --------------------------------------------------------------------
def fake_model(base: Path, payload: bytes = b"not really weights") -> Path:
    """A model pair that passes the registry's checks (not loadable: the weights are junk)."""
    base.with_suffix(".safetensors").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    meta = {"format": "rotcodec-model", "weights_sha256": digest, "model_hash": digest}
    base.with_suffix(".json").write_text(json.dumps(meta))
    return base


def tiny_model(base: Path) -> Path:
    torch.manual_seed(0)
    q = RVQConfig(dim=16, n_q=4, codebook_size=64, kmeans_init=False)
    cfg = CodecConfig(base_channels=8, strides=[2, 4, 5, 8], latent_dim=16, dilations=[1], quantizer=q)
    save_model(Codec(cfg).eval(), base)
    return base


def test_one_model_identity_checked_on_load(tmp_path: Path) -> None:
    """A model's `.rcq` fingerprint is its content hash, which loading verifies: a JSON that claims another
    identity for the same weights is refused, and the same weights saved again keep their identity."""
    from rotcodec.models import ModelFileError, model_hash, read_model

    base = tiny_model(tmp_path / "m")
    codec = read_model(base).codec
    meta = json.loads(base.with_suffix(".json").read_text())
    assert meta["model_hash"] == model_hash(codec)
    assert load_model(base).fingerprint == bytes.fromhex(meta["model_hash"])[:16]
    save_model(codec, tmp_path / "again", code_counts=torch.ones(len(codec.table_sizes()), 64, dtype=torch.int64))
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["model_hash"] == meta["model_hash"] and again["weights_sha256"] != meta["weights_sha256"]
    meta["model_hash"] = "0" * 64
    base.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="model_hash"):
        read_model(base)


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $ROTCODEC_MODELS, an empty cache, and an empty working directory."""
    monkeypatch.delenv("ROTCODEC_MODELS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_a_model_in_the_working_directory_does_not_replace_the_bundled_one(clean_env: Path) -> None:
    fake_model(clean_env / "speech16k")
    bundled = bundled_dir() / "speech16k.safetensors"
    assert resolve_model("speech16k").weights_path == bundled
    assert resolve_model(None).weights_path == bundled
    assert resolve_model("speech16k").source == "bundled"
    # a path still reaches the local file, however it is spelled
    for spelled in ("./speech16k", "speech16k.safetensors", "speech16k.json", Path("speech16k")):
        entry = resolve_model(spelled)
        assert entry.weights_path == clean_env / "speech16k.safetensors" and entry.source == "path"
    # `rotcodec models` shows the file the name means, and says the one beside the user is not used
    assert [e.weights_path for e in list_models() if e.name == "speech16k"] == [bundled]
    assert "not searched: ./speech16k in the current directory" in "\n".join(search_report())


def test_loading_by_name_ignores_a_junk_model_beside_the_user(clean_env: Path) -> None:
    fake_model(clean_env / "speech16k")
    model = load_model("speech16k")  # the junk weights would fail to load
    bundled_meta = json.loads((bundled_dir() / "speech16k.json").read_text())
    assert model.fingerprint == bytes.fromhex(bundled_meta["model_hash"])[:16]


def test_a_local_file_is_named_by_a_path(clean_env: Path) -> None:
    tiny_model(clean_env / "tiny")
    with pytest.raises(ModelNotFoundError, match=r"not searched: pass \./tiny"):
        resolve_model("tiny")
    model = load_model("./tiny")
    assert model.entry.base == clean_env / "tiny"  # absolute: stays the same file if the directory changes
    os.chdir(clean_env.parent)
    assert load_model(clean_env / "tiny").fingerprint == model.fingerprint
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model("./tiny")  # relative to the new working directory: nothing there


def test_relative_search_folders_are_made_absolute(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / "models").mkdir()
    tiny_model(clean_env / "models" / "tiny")
    monkeypatch.setenv("ROTCODEC_MODELS", "models")
    entry = resolve_model("tiny")
    assert entry.base == clean_env / "models" / "tiny" and entry.source == "local"
    assert load_model("tiny").entry.base == clean_env / "models" / "tiny"


def test_shadowed_models_are_reported_and_still_found_by_fingerprint(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    fake_model(folder / "speech16k", b"fine-tuned")
    monkeypatch.setenv("ROTCODEC_MODELS", str(folder))
    assert resolve_model("speech16k").source == "bundled"
    [(hidden, used)] = shadowed_models()
    assert hidden.base == folder / "speech16k" and used.source == "bundled"
    report = "\n".join(search_report())
    assert "shadowed" in report and str(folder / "speech16k.safetensors") in report
    assert "never the current directory" in report and "$ROTCODEC_MODELS" in report
    # a file encoded with the shadowed model is still matched to it: the fingerprint names that model
    found = find_by_fingerprint(hashlib.sha256(b"fine-tuned").digest()[:16], "speech16k")
    assert found is not None and found.base == folder / "speech16k"


def test_model_names_are_escaped_in_messages(clean_env: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(HOSTILE)
    assert is_safe_line(str(info.value)) and "\\x1b[2J" in str(info.value)


# -- header strings printed escaped -----------------------------------------------------------------------
def rcq_with_id(model_id: str, model_hash: bytes = bytes(16)) -> bytes:
    header = RcqHeader(
        model_id=model_id,
        model_hash=model_hash,
        model_sample_rate=16000,
        original_sample_rate=16000,
        channels=1,
        num_samples=640,
        hop_length=320,
        codebook_sizes=(64,),
    )
    return encode_bytes(header, np.zeros((1, 1, 2), dtype=np.int64))


def test_unknown_model_message_escapes_the_header_id(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = rcq_with_id(HOSTILE)
    with pytest.raises(ModelNotFoundError) as info:
        model_for_header(decode_bytes(data)[0])
    assert is_safe_line(str(info.value)) and "\\rOK: all files verified\\nrotcodec" in str(info.value)
    (clean_env / "x.rcq").write_bytes(data)
    assert main(["decompress", "x.rcq", "-o", "x.wav"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and is_safe_line(err.rstrip("\n")) and "\\x1b[2J" in err


# These two need rotcodec/cli/compress.py to print header strings through escape_text.
def test_info_escapes_the_header_id(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (clean_env / "x.rcq").write_bytes(rcq_with_id(HOSTILE))
    assert main(["info", "x.rcq"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "OK: all files verified" not in out.splitlines()[2:]  # no forged line of its own
    assert escape_text(HOSTILE) in out
    assert main(["info", "--json", "x.rcq"]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == HOSTILE  # JSON keeps the exact value


def test_decompress_summary_escapes_the_header_id(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_model(clean_env / "tiny")
    model = load_model("./tiny")
    rng = np.random.default_rng(0)
    real = model.compress((0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    header, codes = decode_bytes(real)
    (clean_env / "x.rcq").write_bytes(encode_bytes(dataclasses.replace(header, model_id=HOSTILE), codes))
    assert main(["decompress", "x.rcq", "-o", "x.wav", "--model", "./tiny"]) == 0
    out = capsys.readouterr().out
    assert sf.info(clean_env / "x.wav").frames == 8000
    assert out.count("\n") == 1 and is_safe_line(out.rstrip("\n")) and escape_text(HOSTILE) in out


# -- help and option values ---------------------------------------------------------------------------------
def help_of(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*args, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())  # unwrap argparse's line breaks


def test_help_states_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert "evaluation rate (Hz) with --no-model (default: 16000)" in help_of("eval", capsys=capsys)
    ablate = help_of("ablate", capsys=capsys)
    assert "train.seed values (default: 0 1 2)" in ablate and "evaluation files per run (default: 16)" in ablate
    prepare = help_of("prepare", capsys=capsys)
    assert "(default: 0.05)" in prepare and "(default: speaker)" in prepare and "(default: 0)" in prepare
    assert "k-means iterations per stage (default: 20)" in help_of("requantize", capsys=capsys)
    assert "(default: 300.0)" in help_of("export", capsys=capsys)


def test_help_formatter_skips_what_says_nothing() -> None:
    p = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter)
    p.add_argument("src", help="input")
    p.add_argument("--flag", action="store_true", help="a flag")
    p.add_argument("--opt", help="no default")
    p.add_argument("--rate", type=float, default=0.5, help="a 50%% share")  # argparse's own %-escape
    p.add_argument("--pattern", default="%d.wav", help="file names")
    p.add_argument("--said", default=3, help="three (default 3)")
    p.add_argument("--many", nargs="+", default=["a", "b"], help="names")
    text = " ".join(p.format_help().split())
    assert "a 50% share (default: 0.5)" in text and "names (default: a b)" in text
    assert "file names (default: %d.wav)" in text
    assert "(default: False)" not in text and "(default: None)" not in text
    assert "three (default 3) (default" not in text and "input (default" not in text


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "nan", "inf", "1e999", ""])
def test_positive_float_refuses_with_a_readable_message(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"must be a positive number, got {bad!r}"):
        positive_float(bad)


def test_positive_types_accept_what_they_should() -> None:
    assert positive_float("1.5") == 1.5 and positive_float("3") == 3.0
    assert positive_int("4") == 4
    for bad in ("0", "-2", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole number of at least 1"):
            positive_int(bad)


def test_eval_reports_a_bad_kbps_by_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--data", "d", "--out", "o", "--kbps", "fast"]) == 2
    err = capsys.readouterr().err
    assert "argument --kbps: must be a positive number, got 'fast'" in err and "invalid" not in err


# Needs rotcodec/cli/compress.py to use positive_float for --kbps.
def test_compress_reports_a_bad_kbps_by_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", "in.wav", "--kbps", "fast"]) == 2
    err = capsys.readouterr().err
    assert "argument --kbps: must be a positive number, got 'fast'" in err and "_positive" not in err
