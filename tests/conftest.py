"""Helpers shared by several test modules (importable as `from conftest import ...`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rotcodec.audio import UNKNOWN_FRAMES


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: with several threads on a shared machine, OpenMP sync costs more than the math. Modules
    opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_flac_without_length(path: Path) -> None:
    """A FLAC whose STREAMINFO states 0 total samples ("unknown"), as some encoders leave it; libsndfile
    then reports 2**63 - 1 frames and cannot seek in it."""
    sf.write(str(path), 0.1 * np.sin(np.arange(8000) / 5).astype(np.float32), 8000, format="FLAC")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    data[21] &= 0xF0  # the 36-bit total-samples field: low 4 bits of byte 21, then bytes 22..25
    data[22:26] = bytes(4)
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames >= UNKNOWN_FRAMES


def vowel(sr: int = 16000, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: a harmonic 'vowel' with a gliding f0 (100-140 Hz), formant-like bumps at 700,
    1200 and 2600 Hz, 3 Hz syllable-rate AM and light noise; float32 `[time]` at `sr` Hz, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 120.0 + 20.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = np.zeros_like(t)
    for k in range(1, 40):
        fk = k * f0
        gain = (
            np.exp(-(((fk - 700) / 300) ** 2))
            + 0.6 * np.exp(-(((fk - 1200) / 400) ** 2))
            + 0.3 * np.exp(-(((fk - 2600) / 500) ** 2))
        )
        x += gain * np.sin(k * phase) * (fk < sr / 2)
    x *= 0.5 * (1 - np.cos(2 * np.pi * 3 * t))
    x += 0.01 * rng.standard_normal(t.size)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def pitch_codec(seed: int = 0, lookahead: int = 0, envelope=None, tiers=()):  # noqa: ANN001, ANN201
    """A tiny 16 kHz codec with a pitch row (and envelope rows with `envelope`, an EnvelopeConfig, and further
    envelope tiers `tiers`), after one
    training-mode pass on a vowel (k-means init), in eval mode."""
    from rotcodec.models import Codec, CodecConfig
    from rotcodec.models.harmonic import PitchConfig
    from rotcodec.quantize import RVQConfig

    torch.manual_seed(seed)
    q = RVQConfig(dim=16, n_q=4, codebook_size=64, kmeans_init=True, kmeans_iters=5)
    cfg = CodecConfig(
        sample_rate=16000,
        base_channels=8,
        strides=[2, 4, 5, 8],
        latent_dim=16,
        dilations=[1],
        quantizer=q,
        pitch=PitchConfig(harmonics=16, hidden=16, lookahead=lookahead),
        envelope=envelope,
        envelope_tiers=list(tiers),
    )
    codec = Codec(cfg).train()
    codec(torch.from_numpy(vowel(16000, 2.0, seed=seed))[None, None])
    return codec.eval()
