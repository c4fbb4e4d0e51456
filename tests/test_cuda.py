"""The same code on a CUDA GPU: quantizer gradients and the shipped codec match the CPU, bf16 autocast training
steps stay finite. Skipped where torch sees no GPU (CI); run on a GPU machine with `pytest tests/test_cuda.py`."""

import importlib.util
from pathlib import Path

import pytest
import torch

from rotcodec.losses import GeneratorLoss, LossConfig
from rotcodec.models.codec import Codec, CodecConfig
from rotcodec.models.harmonic import PitchConfig
from rotcodec.models.io import read_model
from rotcodec.quantize import ResidualVQ, RVQConfig
from rotcodec.train.loop import train
from rotcodec.train.recipe import load_recipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("estimator", ["rotation", "ste"])
@pytest.mark.parametrize("wiring", ["detached", "chained"])
def test_rvq_gradients_match_cpu(estimator: str, wiring: str) -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(16, 4, 64, estimator=estimator, wiring=wiring, kmeans_init=False, dead_code_threshold=0.0)
    rvq.eval()
    x = torch.randn(3, 16, 50, dtype=torch.float64)
    g = torch.randn_like(x)
    grads, outs = [], []
    for device in ("cpu", "cuda"):
        m = rvq.double().to(device)
        xi = x.to(device).requires_grad_(True) if device == "cuda" else x.clone().requires_grad_(True)
        out = m(xi)
        (out.quantized * g.to(device)).sum().backward()
        grads.append(xi.grad.cpu())
        outs.append(out.codes.cpu())
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-9)


def test_shipped_model_codes_and_audio_match_cpu() -> None:
    codec = read_model(ROOT / "rotcodec" / "pretrained" / "speech16k").codec.float()
    torch.manual_seed(0)
    t = torch.arange(32_000) / 16_000
    wav = (0.3 * torch.sin(2 * torch.pi * 150 * t) * (1 + torch.sin(2 * torch.pi * 3 * t)) / 2)[None, None]
    wav = wav + 0.01 * torch.randn_like(wav)
    with torch.no_grad():
        codes_cpu = codec.encode(wav, n_q=11)
        audio_cpu = codec.decode(codes_cpu)
        gpu = codec.to("cuda")
        codes_gpu = gpu.encode(wav.cuda(), n_q=11).cpu()
        audio_gpu = gpu.decode(codes_cpu.cuda()).cpu()
    # TF32/cuDNN sums in another order: a near-tie may pick the other code, but not more than a few.
    assert (codes_gpu == codes_cpu).float().mean() > 0.98
    err = (audio_gpu - audio_cpu).pow(2).mean().sqrt() / audio_cpu.pow(2).mean().sqrt()
    assert err < 1e-2


def test_pitch_codec_bf16_autocast_step_is_finite_and_tracks_pitch_as_float32() -> None:
    cfg = CodecConfig(
        base_channels=8,
        latent_dim=16,
        max_channels=64,
        quantizer=RVQConfig(dim=16, n_q=4, codebook_size=64),
        pitch=PitchConfig(harmonics=16),
    )
    codec = Codec(cfg).cuda().train()
    t = torch.arange(16_000, device="cuda") / 16_000
    wav = 0.3 * torch.sin(2 * torch.pi * 140 * t)[None, None].repeat(2, 1, 1)
    with torch.no_grad():
        f0_fp32 = codec(wav).f0
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = codec(wav)
    # The tracker and the oscillators run in float32 under autocast: the sent pitch is the same.
    assert out.f0 is not None and (out.f0 > 0).any()
    torch.testing.assert_close(out.f0, f0_fp32)
    assert out.audio.dtype == torch.float32
    loss = (out.audio.float() - wav).abs().mean() + out.vq_loss
    loss.backward()
    grads = [p.grad for p in codec.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_tiny_recipe_trains_on_cuda_with_bf16(tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "recipes" / "tiny.yaml", ["train.steps=30", "train.amp=bf16", "train.device=cuda"])
    last = train(recipe, tmp_path / "run", quiet=True)
    assert last["step"] == 30 and last["skipped_steps"] == 0
    assert torch.isfinite(torch.tensor(last["loss/total"]))
    assert 0.0 <= last["data_wait_frac"] <= 1.0
    if importlib.util.find_spec("pynvml") is not None:  # NVML reports how busy the GPU was
        assert 0.0 <= last["gpu_busy_frac"] <= 1.0


def test_phase_locked_training_step_on_cuda_reads_the_cpu_phases() -> None:
    codec = read_model(ROOT / "rotcodec" / "pretrained" / "speech16k").codec.float()
    t = torch.arange(16_000) / 16_000
    wav = sum(0.2 / k * torch.sin(2 * torch.pi * k * 130 * t + k) for k in range(1, 6))[None, None]
    with torch.no_grad():
        cpu = codec._lock(wav[:, 0], codec.pitch_tracker(wav[:, 0]), 4, 16)
    gpu = codec.to("cuda").train()
    x = wav.cuda()
    with torch.no_grad():
        phases = gpu._lock(x[:, 0], gpu.pitch_tracker(x[:, 0]), 4, 16).cpu()
    assert bool((cpu > 0).any()) and (phases == cpu).float().mean() > 0.95
    loss_fn = GeneratorLoss(LossConfig(adv=0, feat=0, phase=2.0), 16_000, 320).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = gpu(x, lock=True)
    assert out.locked == 4
    total, parts = loss_fn(out.audio.float(), x, out.vq_loss, harmonic=out.harmonic, locked=out.locked)
    assert "phase" in parts and torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in gpu.parameters() if p.grad is not None)


def test_fused_rotation_on_cuda_matches_the_cpu() -> None:
    """train.compile=rotation's kernels (Triton on CUDA) give the CPU's eager gradient to float rounding."""
    from rotcodec.quantize import rotate_to

    gen = torch.Generator().manual_seed(3)
    e, q, g = (torch.randn(512, 128, generator=gen) for _ in range(3))
    grads = []
    for device, fused in (("cpu", False), ("cuda", True)):
        x = e.to(device).requires_grad_(True)
        out, fallback = rotate_to(x, q.to(device), fused=fused)
        out.backward(g.to(device))
        assert torch.equal(out.cpu(), q) and not fallback.any()
        grads.append(x.grad.cpu())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["rotation", "model"])
def test_compiled_training_runs_on_cuda(tmp_path: Path, mode: str) -> None:
    overrides = ["train.steps=4", "train.log_every=2", "train.device=cuda", f"train.compile={mode}"]
    recipe = load_recipe(ROOT / "recipes" / "tiny.yaml", overrides)
    out = train(recipe, tmp_path / "run", quiet=True)
    assert out["step"] == 4 and out["loss/total"] == out["loss/total"]  # finite, not NaN
