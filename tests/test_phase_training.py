"""Training on what the phase tiers decode: `Codec.forward(lock=True)` locks the harmonic source as a phase tier
does, `loss.phase` scores the locked harmonics' complex spectrum, and recipes refuse settings that cannot train."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import vowel
from test_phase_lock import SR, phase_codec

from rotcodec.config import ConfigError
from rotcodec.losses import GeneratorLoss, LossConfig
from rotcodec.losses.phase import LockedPhaseLoss
from rotcodec.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
HOP = 320


def test_locked_forward_is_what_a_phase_tier_decodes_before_its_band_gains() -> None:
    codec = phase_codec(2)
    torch.nn.init.constant_(codec.harmonic.head[-1].conv.bias, -0.2)  # audible harmonics (0.13 each), not silent
    wav = torch.from_numpy(vowel(SR, 1.0, seed=4))[None, None]
    with torch.no_grad():
        out = codec(wav, lock=True)
        free = codec(wav)
        codes = codec.encode(wav, envelope=None)[:, 0]  # pitch row + stages
        phases = codec._lock(wav[:, 0], codes[:, 0], 3, 8)
        want = codec._synthesise(codes, phases, 8)[..., : wav.shape[-1]]
    assert codec.phase_lock == (3, 8) and out.locked == 3 and free.locked == 0
    assert bool((phases > 0).any())
    torch.testing.assert_close(out.audio, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.audio, free.audio, atol=1e-3)


def _tone(f0: float, shift: float = 0.0, frames: int = 25) -> torch.Tensor:
    t = torch.arange(frames * HOP) / SR
    return sum(0.3 / k * torch.sin(2 * math.pi * k * f0 * t + k * shift) for k in (1, 2, 3))[None]


def test_phase_loss_scores_the_locked_band_only() -> None:
    loss = LockedPhaseLoss(SR, HOP)
    f0 = torch.full((1, 25), 200.0)
    ref = _tone(200.0)
    assert float(loss(ref, ref, f0, 3)) < 1e-6
    assert float(loss(torch.zeros_like(ref), ref, f0, 3)) == pytest.approx(1.0, abs=1e-4)
    # half a period out: every harmonic's phase is off, so the error is about twice the reference
    assert float(loss(_tone(200.0, math.pi), ref, f0, 1)) > 1.8
    # a 2.5 kHz tone lies far above 3.5 x F0: not scored
    high = ref + 0.3 * torch.sin(2 * math.pi * 2500 * torch.arange(ref.shape[-1]) / SR)[None]
    assert float(loss(high, ref, f0, 3)) < 0.02
    assert float(loss(high, ref, torch.zeros_like(f0), 3)) == 0.0  # nothing voiced


def test_generator_loss_adds_the_phase_term_on_locked_steps_only() -> None:
    fn = GeneratorLoss(LossConfig(mel=0, mrstft=0, adv=0, feat=0, phase=2.0), SR, HOP)
    ref = _tone(150.0)[None]
    est = _tone(150.0, 1.0)[None]
    f0 = torch.full((1, 25), 150.0)
    harmonic = (f0, torch.zeros(1, 4, 25))
    total, parts = fn(est, ref, harmonic=harmonic, locked=3)
    assert "phase" in parts and float(total) == pytest.approx(2 * float(parts["phase"]))
    assert float(parts["phase"]) > 0.3
    _, free = fn(est, ref, harmonic=harmonic, locked=0)
    assert "phase" not in free


def test_recipes_refuse_phase_training_that_cannot_happen() -> None:
    recipe = load_recipe(ROOT / "recipes" / "speech16k_phase.yaml")
    assert recipe.train.phase_lock_prob > 0 and recipe.loss.phase > 0
    with pytest.raises(ConfigError, match="phase_harmonics"):
        load_recipe(ROOT / "recipes" / "speech16k_pitch.yaml", ["train.phase_lock_prob=0.5"])
    with pytest.raises(ConfigError, match="phase_lock_prob"):
        load_recipe(ROOT / "recipes" / "speech16k_refine.yaml", ["loss.phase=1.0"])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        load_recipe(ROOT / "recipes" / "speech16k_phase.yaml", ["train.phase_lock_prob=1.5"])
