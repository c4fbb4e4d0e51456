"""`rotcodec export`: checkpoint or model file -> shippable inference-only model with code-count tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors import safe_open

from rotcodec.bitstream import CodingMode
from rotcodec.cli.main import main
from rotcodec.inference import load_model, read_rcq_header
from rotcodec.inference.model import probe_audio
from rotcodec.models import Codec, CodecConfig, model_hash, read_model, save_model
from rotcodec.quantize import RVQConfig


def _trained_tiny(path: Path) -> Path:
    """A tiny codec after a few training-mode passes (k-means init, EMA sums differ from the codebook)."""
    torch.manual_seed(0)
    q = RVQConfig(dim=16, n_q=4, codebook_size=64, kmeans_init=True, kmeans_iters=3)
    codec = Codec(CodecConfig(base_channels=8, strides=[2, 4, 5, 8], latent_dim=16, dilations=[1], quantizer=q))
    codec.train()
    for seed in range(3):
        codec(torch.from_numpy(_speechlike(1.0, seed))[None, None])
    save_model(codec.eval(), path, extra_meta={"step": 3})
    return path


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.8 * t)) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.2 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_export_writes_a_float16_model_with_tables_that_compresses(tmp_path: Path, capsys) -> None:
    _trained_tiny(tmp_path / "ckpt" / "model")
    data = tmp_path / "audio"
    data.mkdir()
    for i in range(3):
        sf.write(data / f"clip{i}.wav", _speechlike(2.0, 10 + i), 16000)
    (tmp_path / "card.json").write_text(json.dumps({"name": "tiny-export", "data": "generated"}))
    out = tmp_path / "shipped" / "tiny"
    argv = ["export", str(tmp_path / "ckpt"), "-o", str(out), "--data", str(data), "--seconds", "5"]
    assert main([*argv, "--card", str(tmp_path / "card.json")]) == 0
    assert "wrote" in capsys.readouterr().out

    weights = out.with_suffix(".safetensors")
    with safe_open(str(weights), "pt") as f:
        keys = set(f.keys())
        assert not any(k.endswith(".embed_avg") for k in keys)  # inference-only
        floats = [f.get_tensor(k) for k in keys if k != "code_counts"]
        assert all(t.dtype == torch.float16 for t in floats if t.is_floating_point())
        counts = f.get_tensor("code_counts")
    assert counts.shape == (4 * 64,) and counts.dtype == torch.int32  # flat rows; counts that fit in 32 bits
    assert counts.reshape(4, 64).sum(1).tolist() == [5 * 50] * 4  # per stage: 5 one-second crops x 50 frames
    assert weights.stat().st_size < 0.5 * (tmp_path / "ckpt" / "model.safetensors").stat().st_size

    loaded = read_model(out)
    assert loaded.meta["model_hash"] == model_hash(loaded.codec)
    assert loaded.extra["name"] == "tiny-export" and loaded.extra["step"] == 3
    assert loaded.extra["code_count_seconds"] == 5.0
    model = load_model(out)
    wav = _speechlike(1.5, 99)
    stream = model.compress(wav, 16000, n_q=4)
    assert read_rcq_header(stream).coding_mode == CodingMode.ENTROPY
    decoded, sr = model.decompress(stream)
    assert sr == 16000 and decoded.shape == (1, wav.size) and np.isfinite(decoded).all()


def test_export_lists_codes_by_use_and_plans_fill_the_rate_with_a_trimmed_stage(tmp_path: Path) -> None:
    """Export renumbers each stage's codes by falling use without changing what the model codes; a `--kbps`
    plan between two stage counts then adds a stage trimmed to its most used codes, and the stream decodes."""
    src = _trained_tiny(tmp_path / "ckpt" / "model")
    data = tmp_path / "audio"
    data.mkdir()
    for i in range(3):
        sf.write(data / f"clip{i}.wav", _speechlike(2.0, 10 + i), 16000)
    out = tmp_path / "tiny"
    argv = ["export", str(tmp_path / "ckpt"), "-o", str(out), "--data", str(data), "--seconds", "5"]
    assert main([*argv, "--no-skip-code"]) == 0
    model = load_model(out)
    assert not model.skip_code
    assert model.sorted_codes and np.all(np.diff(model.code_counts, axis=1) <= 0)
    # the same quantizer, renumbered: decoded latents equal those of the unsorted model (float16 weights)
    original = read_model(src).codec
    from rotcodec.models.io import STORAGE_DTYPES, round_weights_

    round_weights_(original, STORAGE_DTYPES["float16"])
    z = original.embed(torch.from_numpy(_speechlike(1.0, 5))[None, None])
    torch.testing.assert_close(
        model.codec.quantizer.decode(model.codec.quantizer.encode(z)),
        original.quantizer.decode(original.quantizer.encode(z)),
    )

    wav = _speechlike(12.0, 7)
    costs = model.row_costs(probe_audio(wav[None], 16000), 16000)  # what compress measures
    assert np.all(costs.rows[1:] == costs.rows[model.n_q]) and costs.rows[1].min() > 0  # no band gains: one price
    two, three = (model.bitrate(model.codec.layout(n), costs=costs) for n in (2, 3))
    kbps = (two + 0.9 * (three - two)) * 1.02 + model.overhead_kbps(model.codec.layout(3), 1, 12.0)
    layout = model.plan(kbps=kbps, costs=costs, seconds=12.0)
    assert layout.n_q == 3 and layout.last_codes is not None and 2 <= layout.last_codes < 64
    stream = model.compress(wav, 16000, kbps=kbps)
    header = read_rcq_header(stream)
    assert header.codebook_sizes[-1] == layout.last_codes and model.layout_of(header) == header.layout == layout
    lone = model.codec.layout(1, None, 5)
    assert model.layout_of(read_rcq_header(model.compress(wav, 16000, layout=lone))) == lone
    assert len(stream) * 8 / 12.0 / 1000 <= kbps
    decoded, _ = model.decompress(stream)
    assert decoded.shape == (1, wav.size) and np.isfinite(decoded).all()
    # in the latent, a trimmed stage refines less than the whole stage and more than none
    rvq = model.codec.quantizer
    with torch.no_grad():
        z = model.codec.embed(torch.from_numpy(wav)[None, None])
    err = [float((z - rvq.decode(rvq.encode(z, n, last))).pow(2).sum()) for n, last in ((2, None), (3, 8), (3, None))]
    assert err[0] > err[1] > err[2], err


def test_export_float32_and_bad_checkpoint(tmp_path: Path, capsys) -> None:
    source = _trained_tiny(tmp_path / "model")
    out = tmp_path / "full"
    assert main(["export", str(source), "-o", str(out), "--dtype", "float32"]) == 0
    with safe_open(str(out.with_suffix(".safetensors")), "pt") as f:
        assert all(f.get_tensor(k).dtype != torch.float16 for k in f.keys())
        assert "code_counts" not in f.keys()  # no --data: no tables, plain packing only
    capsys.readouterr()
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_export_takes_weightless_settings_from_a_recipe(tmp_path: Path, capsys) -> None:
    _trained_tiny(tmp_path / "ckpt" / "model")
    recipe = tmp_path / "recipe.yaml"
    model = "model: {base_channels: 8, strides: [2, 4, 5, 8], latent_dim: 16, dilations: [1], "
    quantizer = "quantizer: {dim: 16, n_q: 4, codebook_size: 64, kmeans_init: true, kmeans_iters: 3}"
    tiers = "envelope_tiers: [{edges_hz: [0, 2000], levels: 3}]"
    recipe.write_text(f"{model}{quantizer}, envelope: {{edges_hz: [0, 1000, 3000]}}, {tiers}}}\n")
    out = tmp_path / "with_envelope"
    assert main(["export", str(tmp_path / "ckpt"), "-o", str(out), "--recipe", str(recipe)]) == 0
    shipped = read_model(out).codec
    assert shipped.code_sizes(1) == (5, 5, 5, 64) and shipped.code_sizes(1, 1) == (3, 3, 64)
    before = read_model(tmp_path / "ckpt" / "model").codec.state_dict()
    for k, t in shipped.state_dict().items():  # the checkpoint's weights, rounded to float16
        assert k.endswith("embed_avg") or torch.equal(
            t, before[k].half().to(t.dtype) if t.is_floating_point() else before[k]
        )
    # Weights that do not fit the recipe's model are refused in one line, and nothing is written.
    recipe.write_text(f"{model}{quantizer.replace('n_q: 4', 'n_q: 6')}}}\n")
    assert main(["export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "bad"), "--recipe", str(recipe)]) == 1
    assert "do not fit" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()


def test_export_skip_code_lets_any_trimmed_stage_refine_and_streams_decode(tmp_path: Path) -> None:
    """By default export makes code 0 of every stage the zero vector (in place of the least used code): a
    stage trimmed to k codes then never moves the latent away, its table gives the skip half the mass, and a
    stream that sends skips decodes."""
    _trained_tiny(tmp_path / "ckpt" / "model")
    data = tmp_path / "audio"
    data.mkdir()
    for i in range(3):
        sf.write(data / f"clip{i}.wav", _speechlike(2.0, 10 + i), 16000)
    out = tmp_path / "tiny"
    assert main(["export", str(tmp_path / "ckpt"), "-o", str(out), "--data", str(data), "--seconds", "5"]) == 0
    model = load_model(out)
    rvq = model.codec.quantizer
    assert model.skip_code and model.sorted_codes
    assert all(not bool(stage.codebook[0].any()) for stage in rvq.stages)
    assert np.all(np.diff(model.code_counts[:, 1:], axis=1) <= 0)  # the rest by falling use
    wav = _speechlike(6.0, 3)
    with torch.no_grad():
        z = model.codec.embed(torch.from_numpy(wav)[None, None])
    _, gain = rvq.encode_trimmed(z, [2, 3, 5, 64])
    assert bool((gain >= 0).all()), gain  # skipping is always on offer
    # a stream whose last stage is trimmed to 2 codes (skip or the most used code) decodes
    layout = model.codec.layout(2, None, 2)
    codes = model.codec.encode(torch.from_numpy(wav)[None, None], 2, None, 2)
    share = float((codes[:, -1] == 0).float().mean())
    assert 0.1 < share < 0.9, share  # frames both skip and take the code
    table = model.tables(layout)[-1, :2]
    assert table[0] == table[1]  # the skip holds half the trimmed table
    stream = model.compress(wav, 16000, layout=layout)
    assert model.layout_of(read_rcq_header(stream)) == layout
    decoded, _ = model.decompress(stream)
    assert decoded.shape == (1, wav.size) and np.isfinite(decoded).all()
    # exporting the exported model again keeps its skip code first
    again = tmp_path / "again"
    assert main(["export", str(out), "-o", str(again), "--data", str(data), "--seconds", "5"]) == 0
    assert load_model(again).skip_code and load_model(again).sorted_codes
