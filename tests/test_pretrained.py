"""The bundled speech16k model: its stages refine, so more bits buy a closer decode (on a committed clip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rotcodec.audio import load_audio
from rotcodec.eval.metrics import mel_distance
from rotcodec.inference import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = Path(__file__).parent.parent / "samples" / "librivox_16k.wav"


@pytest.fixture(scope="module")
def bundled():  # noqa: ANN201
    model = load_model()
    wav, sr = load_audio(str(SAMPLE))
    assert sr == model.codec.sample_rate
    return model.codec.eval(), torch.from_numpy(np.ascontiguousarray(wav[:1], dtype=np.float32))[None]


def test_latent_error_falls_with_every_stage(bundled) -> None:  # noqa: ANN001
    codec, wav = bundled
    with torch.no_grad():
        z = codec.embed(wav)
        errors = [
            float((z - codec.quantizer.decode(codec.quantizer.encode(z, n))).pow(2).sum() / z.pow(2).sum())
            for n in range(1, codec.n_q + 1)
        ]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] < 0.5 and errors[-1] < 0.01 * errors[0]


def test_more_stages_decode_closer_to_the_input(bundled) -> None:  # noqa: ANN001
    codec, wav = bundled
    ref = wav[0, 0].numpy()
    mel = {}
    for n in (2, 8, codec.n_q):
        codes = codec.encode(wav, n, envelope=None)
        out = codec.decode(codes, envelope=None)[0, 0, : ref.size].numpy()
        mel[n] = mel_distance(ref, out, codec.sample_rate)
    assert mel[8] < mel[2] and mel[codec.n_q] < mel[8], mel


def test_plans_trim_a_stage_to_sizes_that_bring_the_latent_closer(bundled) -> None:  # noqa: ANN001
    """The bundled model lists each stage's codes by falling use after a zero "skip" code 0, so a stage
    trimmed to its first k codes keeps its most used ones and can leave a frame as it is. The planner measures
    on the file's probe which trimmed sizes lower the latent error (`FileCosts.helps`); that measurement
    agrees with the codec's own encode and decode, and with the skip code no trimmed size moves the latent
    away (without it, a few codes far from a small residual overshot it)."""
    codec, wav = bundled
    model = load_model()
    assert model.sorted_codes and model.skip_code
    costs = model.row_costs(wav.numpy()[0, :, : 10 * codec.sample_rate], codec.sample_rate)
    with torch.no_grad():
        z = codec.embed(wav[..., : 10 * codec.sample_rate])

        def error(n: int, k: int | None = None) -> float:
            return float((z - codec.quantizer.decode(codec.quantizer.encode(z, n, k))).pow(2).sum())

        for n in (1, 2, 3, 9):
            for k in (2, 4, 12, 32, 256):
                j = costs.sizes.index(k)
                assert bool(costs.helps[n, j]) == (error(n + 1, k) < error(n)), (n, k)
                assert error(n + 1, k) <= error(n), (n, k)
    assert costs.helps[:, costs.sizes.index(256)].all() and costs.helps[:, costs.sizes.index(2)].any()
