"""Reconstruction and adversarial losses; the combined generator loss backpropagates end to end."""

from __future__ import annotations

import auraloss
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.config import ConfigError, from_dict
from rotcodec.dsp.pitch import frame_periodicity
from rotcodec.losses import (
    AdversarialLossError,
    AutocorrelationLoss,
    GeneratorLoss,
    LogMel,
    LossConfig,
    LossInputError,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    PeriodicityLoss,
    TimeL1Loss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from rotcodec.losses.mel import DEFAULT_SCALES
from rotcodec.models import Codec, CodecConfig, Discriminator, DiscriminatorConfig
from rotcodec.quantize import RVQConfig

SR = 8000
MEL_SCALES = ((64, 10), (256, 40))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def recon_losses() -> dict[str, torch.nn.Module]:
    return {
        "mrstft": MultiResolutionSTFTLoss((512, 256, 64)),
        "mel": MultiScaleMelLoss(SR, MEL_SCALES),
        "l1": TimeL1Loss(),
        "periodicity": PeriodicityLoss(SR),
        "acf": AutocorrelationLoss(SR),
    }


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 2.0), noise=st.floats(0.01, 1.0))
def test_reconstruction_losses_zero_iff_identical(
    recon_losses: dict[str, torch.nn.Module], seed: int, scale: float, noise: float
) -> None:
    g = torch.Generator().manual_seed(seed)
    target = scale * torch.randn(2, 1, 800, generator=g)
    other = target + noise * scale * torch.randn(2, 1, 800, generator=g)
    for name, loss in recon_losses.items():
        same = float(loss(target, target.clone()))
        diff = float(loss(other, target))
        assert same == pytest.approx(0.0, abs=1e-6), name
        assert diff > 1e-7, name
    torch.testing.assert_close(recon_losses["l1"](other, target), (other - target).abs().mean())


def test_reconstruction_loss_input_checks(recon_losses: dict[str, torch.nn.Module]) -> None:
    with pytest.raises(LossInputError):
        recon_losses["l1"](torch.zeros(1, 1, 10), torch.zeros(1, 1, 11))
    with pytest.raises(LossInputError):
        recon_losses["periodicity"](torch.zeros(1, 1, 800), torch.zeros(1, 800))
    with pytest.raises(LossInputError, match="too short"):
        recon_losses["mrstft"](torch.zeros(1, 1, 20), torch.zeros(1, 1, 20))


def test_hinge_and_lsgan_values() -> None:
    confident_real = [torch.full((2, 1, 5, 3), 1.5), torch.full((2, 1, 4), 2.0)]
    confident_fake = [torch.full((2, 1, 5, 3), -1.2), torch.full((2, 1, 4), -3.0)]
    assert float(discriminator_loss(confident_real, confident_fake, "hinge")) == 0.0
    assert float(discriminator_loss(confident_fake, confident_real, "hinge")) > 2.0
    ones = [torch.ones(2, 1, 7)]
    zeros = [torch.zeros(2, 1, 7)]
    assert float(discriminator_loss(ones, zeros, "lsgan")) == 0.0
    assert float(discriminator_loss(zeros, ones, "lsgan")) == pytest.approx(2.0)
    # The generator's loss falls as the discriminator rates its output as more real.
    for kind in ("hinge", "lsgan"):
        values = [float(generator_adversarial_loss([torch.full((3, 4), v)], kind)) for v in (-1.0, 0.0, 0.5, 1.0)]
        assert values == sorted(values, reverse=True) and values[-1] == 0.0 and values[0] > 0
    with pytest.raises(AdversarialLossError):
        generator_adversarial_loss(ones, "wasserstein")
    with pytest.raises(AdversarialLossError):
        discriminator_loss(ones, ones + zeros)


def test_feature_matching() -> None:
    torch.manual_seed(0)
    real = [[torch.randn(2, 4, 9), torch.randn(2, 8, 3)], [torch.randn(2, 3, 5)]]
    fake = [[f + 0.3 * torch.randn_like(f) for f in layers] for layers in real]
    for kind in ("relative", "l1"):
        assert float(feature_matching_loss(real, real, kind)) == 0.0
        assert float(feature_matching_loss(real, fake, kind)) > 0.0
    scaled = lambda feats: [[10 * f for f in layers] for layers in feats]  # noqa: E731
    rel, rel10 = feature_matching_loss(real, fake, "relative"), feature_matching_loss(scaled(real), scaled(fake))
    torch.testing.assert_close(rel10, rel)  # relative: scale-free
    l1, l110 = feature_matching_loss(real, fake, "l1"), feature_matching_loss(scaled(real), scaled(fake), "l1")
    torch.testing.assert_close(l110, 10 * l1)


def test_loss_config_from_dict_and_validation() -> None:
    cfg = from_dict(LossConfig, {"mel": 5, "adversarial": "lsgan", "mel_scales": [[64, 10]]})
    assert cfg.mel == 5.0 and cfg.mel_scales == [[64, 10]]
    with pytest.raises(ConfigError):
        from_dict(LossConfig, {"mell": 5})
    with pytest.raises(AdversarialLossError):
        LossConfig(adversarial="wgan")
    with pytest.raises(ValueError, match="feat"):
        LossConfig(feat=-1)


def test_generator_loss_backward_through_everything() -> None:
    torch.manual_seed(1)
    q = RVQConfig(dim=8, n_q=2, codebook_size=16, kmeans_init=False)
    codec = Codec(CodecConfig(sample_rate=SR, base_channels=4, strides=[2, 4], latent_dim=8, quantizer=q))
    disc = Discriminator(DiscriminatorConfig(channels=4, n_ffts=[128, 64], mpd_channels=2, mpd_max_channels=8))
    cfg = LossConfig(
        mel=15, mrstft=1, l1=0.5, adv=1, feat=2, vq=1, mel_scales=[list(s) for s in MEL_SCALES], stft_sizes=[256, 64]
    )
    loss_fn = GeneratorLoss(cfg, SR)
    wav = 0.3 * torch.randn(2, 1, 1000)
    out = codec(wav)
    fake_logits, fake_feats = disc(out.audio)
    _, real_feats = disc(wav)
    total, parts = loss_fn(out.audio, wav, out.vq_loss, fake_logits, fake_feats, real_feats)
    assert set(parts) == {"mel", "mrstft", "l1", "adv", "feat", "vq", "total"}
    weights = {"mel": 15, "mrstft": 1, "l1": 0.5, "adv": 1, "feat": 2, "vq": 1}
    expected = sum(w * parts[k] for k, w in weights.items())
    torch.testing.assert_close(total.detach(), expected)
    assert all(not v.requires_grad and v.dim() == 0 for v in parts.values())
    total.backward()
    for name, module in (("encoder", codec.encoder), ("decoder", codec.decoder)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    # Discriminator step on detached fakes.
    d_loss = discriminator_loss(disc(wav)[0], disc(out.audio.detach())[0], cfg.adversarial)
    disc.zero_grad()
    d_loss.backward()
    assert all(p.grad is not None for p in disc.parameters())


def _separate_spectral_losses(estimate: torch.Tensor, target: torch.Tensor, sr: int) -> torch.Tensor:
    """The spectral terms as computed before the losses shared their STFTs: auraloss's MR-STFT and one
    `LogMel` per scale, each with its own STFTs of both signals."""
    sizes = [2048, 1024, 512, 256, 128]
    mrstft = auraloss.freq.MultiResolutionSTFTLoss(sizes, [n // 4 for n in sizes], sizes)
    mels = [LogMel(sr, n, m) for n, m in DEFAULT_SCALES]
    mel = sum((m(estimate) - m(target)).abs().mean() for m in mels) / len(mels)
    return 15.0 * mel + mrstft(estimate, target)


def test_shared_stfts_equal_separate_losses() -> None:
    """GeneratorLoss shares the mel and MR-STFT losses' STFTs (PairSpectra): same values and gradients as
    computing each loss on its own, to float32 rounding; with a silent stretch, where magnitudes hit the floor."""
    g = torch.Generator().manual_seed(3)
    target = 0.3 * torch.randn(2, 1, 8000, generator=g)
    target[..., 2000:3000] = 0.0
    estimate = (target + 0.05 * torch.randn(2, 1, 8000, generator=g)).requires_grad_()
    loss_fn = GeneratorLoss(LossConfig(mel=15.0, mrstft=1.0, adv=0, feat=0, vq=0), 16000)
    shared, parts = loss_fn(estimate, target)
    (grad_shared,) = torch.autograd.grad(shared, estimate)
    separate = _separate_spectral_losses(estimate, target, 16000)
    (grad_separate,) = torch.autograd.grad(separate, estimate)
    torch.testing.assert_close(shared, separate, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad_shared, grad_separate, rtol=1e-4, atol=1e-4 * grad_separate.abs().max().item())
    mrstft = auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=[512, 64], hop_sizes=[128, 16], win_lengths=[512, 64])
    torch.testing.assert_close(MultiResolutionSTFTLoss((512, 64))(estimate, target), mrstft(estimate, target))


def test_generator_loss_skips_zero_weights_and_missing_inputs() -> None:
    loss_fn = GeneratorLoss(LossConfig(mel=0, mrstft=0, l1=1, adv=1, feat=1, vq=0), SR)
    assert loss_fn.mel is None and loss_fn.mrstft is None
    x = torch.randn(1, 1, 300)
    y = x + 0.1
    total, parts = loss_fn(y, x, vq_loss=torch.tensor(5.0))
    assert set(parts) == {"l1", "total"}
    torch.testing.assert_close(total, torch.tensor(0.1))


def _harmonic(sr: int, seconds: float, f0: float) -> torch.Tensor:
    t = torch.arange(int(sr * seconds)) / sr
    return sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 8)).reshape(1, 1, -1) * 0.2


def test_periodicity_loss_rewards_committing_to_a_pitch() -> None:
    """Optimising a noise waveform with the periodicity loss alone makes it periodic (the loss exists to
    stop decoders from settling for noise-excited output); gradients stay finite for silent estimates."""
    loss_fn = PeriodicityLoss(SR)
    target = _harmonic(SR, 0.5, 150.0)
    torch.manual_seed(0)
    est = (0.2 * torch.randn_like(target)).requires_grad_(True)
    start = loss_fn(est, target).item()
    opt = torch.optim.Adam([est], lr=0.01)
    for _ in range(60):
        loss = loss_fn(est, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert start > 0.5 and loss_fn(est, target).item() < 0.5 * start
    silent = torch.zeros_like(target, requires_grad=True)
    loss_fn(silent, target).backward()
    assert torch.isfinite(silent.grad).all()
    # Level-free: a quieter copy is exactly as periodic; frames of a 24 kHz tone are voiced too.
    assert float(loss_fn(0.01 * target, target)) < 1e-5
    p24, e24 = frame_periodicity(_harmonic(24000, 0.3, 220.0)[0, 0], 24000)
    assert p24.shape == e24.shape == (27,) and p24.min() > 0.95


def test_autocorrelation_loss_pulls_the_pitch_to_the_reference() -> None:
    """The periodicity loss accepts any pitch; the autocorrelation loss has its minimum at the reference's
    and a gradient that reaches it from 7% away."""
    target = _harmonic(SR, 0.5, 150.0)
    acf, per = AutocorrelationLoss(SR), PeriodicityLoss(SR)
    wrong = _harmonic(SR, 0.5, 170.0)
    assert per(wrong, target).item() < 0.01 < 0.3 < acf(wrong, target).item()
    assert acf(target, target).item() == 0.0
    f0 = torch.tensor(140.0, requires_grad=True)
    t = torch.arange(SR // 2) / SR
    opt = torch.optim.Adam([f0], lr=1.0)
    for _ in range(80):
        est = 0.2 * sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 8)).reshape(1, 1, -1)
        loss = acf(est, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(f0.item() - 150.0) < 1.0


def test_generator_loss_periodicity_term_is_optional() -> None:
    x = _harmonic(SR, 0.3, 120.0)
    _, parts = GeneratorLoss(LossConfig(mel=0, mrstft=0, periodicity=2.0, vq=0), SR)(torch.randn_like(x), x)
    assert set(parts) == {"periodicity", "total"} and float(parts["total"]) == pytest.approx(
        2 * float(parts["periodicity"])
    )
    assert GeneratorLoss(LossConfig(), SR).periodicity is None and GeneratorLoss(LossConfig(), SR).acf is None
    _, parts = GeneratorLoss(LossConfig(mel=0, mrstft=0, acf=1.0, vq=0), SR)(torch.randn_like(x), x)
    assert set(parts) == {"acf", "total"} and parts["acf"] > 0.1
    with pytest.raises(ValueError, match="periodicity"):
        LossConfig(periodicity=-1.0)
