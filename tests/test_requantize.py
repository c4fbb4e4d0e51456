"""`rotcodec requantize`: factorised-code model -> full-width residual codes with the same encoder and decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import vowel

from rotcodec.cli.main import main
from rotcodec.models import Codec, CodecConfig, read_model, save_model
from rotcodec.quantize import RVQConfig
from rotcodec.train.requantize import fit_affine, fold_affine_into_encoder, requantize

pytestmark = pytest.mark.usefixtures("one_thread")


def _factorised_model(path: Path) -> Path:
    torch.manual_seed(0)
    q = RVQConfig(dim=16, n_q=4, codebook_size=32, codebook_dim=4, kmeans_init=True, kmeans_iters=3)
    codec = Codec(CodecConfig(base_channels=8, latent_dim=16, dilations=[1], quantizer=q)).train()
    codec(torch.from_numpy(vowel(16000, 2.0))[None, None])
    save_model(codec.eval(), path)
    return path


def _audio_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "audio"
    folder.mkdir()
    for seed in range(3):
        sf.write(folder / f"v{seed}.wav", vowel(16000, 4.0, seed=seed), 16000)
    return folder


def _requantize_cli(old_path: Path, tmp_path: Path) -> int:
    """`rotcodec requantize OLD -o TMP/new` on three generated vowels, with few k-means iterations."""
    data = str(_audio_dir(tmp_path))
    return main(
        ["requantize", str(old_path), "-o", str(tmp_path / "new"), "--data", data, "--seconds", "12", "--iters", "3"]
    )


def test_folded_map_makes_the_encoder_output_the_affine_image() -> None:
    torch.manual_seed(1)
    q = RVQConfig(dim=16, n_q=2, codebook_size=32)
    codec = Codec(CodecConfig(base_channels=8, latent_dim=16, dilations=[1], quantizer=q)).eval()
    wav = torch.from_numpy(vowel(16000, 1.0))[None, None]
    z = codec.embed(wav)
    a, b = torch.randn(16, 16), torch.randn(16)
    fold_affine_into_encoder(codec, a, b)
    expected = torch.einsum("bdt,de->bet", z, a) + b[None, :, None]
    torch.testing.assert_close(codec.embed(wav), expected, atol=1e-4, rtol=1e-4)


def test_fit_affine_recovers_an_exact_map() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(500, 8, generator=gen)
    a, b = torch.randn(8, 8, generator=gen), torch.randn(8, generator=gen)
    a_fit, b_fit, r2 = fit_affine(z, z @ a + b)
    torch.testing.assert_close(a_fit, a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b_fit, b, atol=1e-4, rtol=1e-4)
    assert r2 > 0.9999


def test_requantized_stages_refine_and_keep_the_decoder(tmp_path: Path) -> None:
    old_path = _factorised_model(tmp_path / "old")
    codec, report = requantize(old_path, [str(_audio_dir(tmp_path))], seconds=12, iters=5)
    assert codec.config.quantizer.codebook_dim is None
    assert all(later < earlier for earlier, later in zip(report.stage_error, report.stage_error[1:], strict=False))
    old = read_model(old_path).codec
    for name, tensor in old.decoder.state_dict().items():
        torch.testing.assert_close(codec.decoder.state_dict()[name], tensor)
    # on unseen audio too, the latent error falls with every stage
    with torch.no_grad():
        z = codec.embed(torch.from_numpy(vowel(16000, 2.0, seed=7))[None, None])
    errors = [float((z - codec.quantizer.decode(codec.quantizer.encode(z, n))).pow(2).sum()) for n in (1, 2, 4)]
    assert errors[0] > errors[1] > errors[2]


def test_cli_writes_a_model_that_trains_from_it(tmp_path: Path, capsys) -> None:
    old_path = _factorised_model(tmp_path / "old")
    code = _requantize_cli(old_path, tmp_path)
    assert code == 0
    assert "R²" in capsys.readouterr().out
    new = read_model(tmp_path / "new").codec
    assert new.config.quantizer.codebook_dim is None and all(bool(s.initted) for s in new.quantizer.stages)
    wav = torch.from_numpy(vowel(16000, 1.0))[None, None]
    out = new.train()(wav)  # loads as a training model: no k-means re-init, finite output
    assert torch.isfinite(out.audio).all()
    assert np.isfinite(out.vq_loss.item())


def test_cli_refuses_a_full_width_model(tmp_path: Path, capsys) -> None:
    old_path = _factorised_model(tmp_path / "old")
    _requantize_cli(old_path, tmp_path)
    capsys.readouterr()
    code = main(
        [
            "requantize",
            str(tmp_path / "new"),
            "-o",
            str(tmp_path / "again"),
            "--data",
            str(tmp_path / "audio"),
            "--seconds",
            "12",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "already has full-width codes" in err and "\n" not in err


def test_cli_keeps_an_existing_output_without_force(tmp_path: Path, capsys) -> None:
    old_path = _factorised_model(tmp_path / "old")
    before = (tmp_path / "old.safetensors").read_bytes()
    data = str(_audio_dir(tmp_path))
    code = main(["requantize", str(old_path), "-o", str(old_path), "--data", data, "--seconds", "12"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "--force" in err and "\n" not in err
    assert (tmp_path / "old.safetensors").read_bytes() == before
