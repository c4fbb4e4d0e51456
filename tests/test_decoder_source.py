"""`CodecConfig.decoder_source`: the SEANet decoder reads the harmonic source through a zero-initialised input,
so weights trained without it decode exactly as before, training moves it, and streams still decode as whole
files do."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pitch_codec, vowel

from rotcodec.models import Codec, model_hash
from rotcodec.models.io import load_model
from rotcodec.train.loop import train
from rotcodec.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def with_source(codec: Codec) -> Codec:
    """The same weights in a codec whose decoder also reads the source (its new input at zero)."""
    twin = Codec(dataclasses.replace(codec.config, decoder_source=True)).eval()
    missing, unexpected = twin.load_state_dict(codec.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("decoder.source_in.") for k in missing) and missing
    return twin


def test_a_zero_source_input_decodes_exactly_as_before() -> None:
    codec = pitch_codec(seed=1)
    twin = with_source(codec)
    wav = torch.from_numpy(vowel(16000, 1.0, seed=2))[None, None]
    with torch.no_grad():
        torch.testing.assert_close(twin(wav).audio, codec(wav).audio, rtol=0, atol=0)
        codes = codec.encode(wav)
        torch.testing.assert_close(twin.decode(codes), codec.decode(codes), rtol=0, atol=0)
    assert model_hash(twin) != model_hash(codec)  # a different model: streams must not mix them up
    with pytest.raises(ValueError, match="needs pitch"):
        dataclasses.replace(codec.config, pitch=None, decoder_source=True)


def test_training_moves_the_source_input_and_streaming_still_equals_whole() -> None:
    twin = with_source(pitch_codec(seed=3)).train()
    wav = torch.from_numpy(vowel(16000, 1.0, seed=4))[None, None]
    opt = torch.optim.Adam(twin.decoder.source_in.parameters(), lr=1e-2)
    for _ in range(3):
        out = twin(wav)
        loss = (out.audio - wav).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert twin.decoder.source_in.conv.weight.grad.abs().sum() > 0
        opt.step()
    twin.eval()
    assert twin.decoder.source_in.conv.weight.abs().sum() > 0
    with torch.no_grad():
        codes = twin.encode(wav)
        whole = twin.decode(codes)
        with twin.streaming():
            parts = [twin.decode(codes[..., i : i + 3]) for i in range(0, codes.shape[-1], 3)]
    torch.testing.assert_close(torch.cat(parts, dim=-1), whole, rtol=1e-5, atol=1e-5)


def test_init_from_weights_without_a_source_input(tmp_path: Path) -> None:
    tiny = ROOT / "recipes" / "tiny.yaml"
    overrides = ["train.steps=2", "train.valid_every=1000", "train.log_every=1", "model.pitch={harmonics: 8}"]
    base = tmp_path / "base"
    train(load_recipe(tiny, overrides), base, quiet=True)
    weights = latest(base) / "model"
    run = tmp_path / "source"
    train(load_recipe(tiny, [*overrides, "model.decoder_source=true"]), run, init=str(weights), quiet=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss/mel" in r] == [1, 2]
    assert all(np.isfinite(r["loss/mel"]) for r in rows if "loss/mel" in r)
    codec = load_model(latest(run) / "model")
    assert codec.config.decoder_source and codec.decoder.source_in is not None


def latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
