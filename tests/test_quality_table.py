"""Layout quality tables: measured per layout at export, then ranked by `CodecModel.plan`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import vowel
from test_envelope import SR, envelope_codec
from test_export import _speechlike, _trained_tiny

from rotcodec.bitstream import estimate_frequencies
from rotcodec.cli.main import main
from rotcodec.inference import load_model
from rotcodec.inference.model import RATE_MARGIN, _quality_table
from rotcodec.losses.mel import MultiScaleMelLoss
from rotcodec.models import read_model, save_model
from rotcodec.train.quality_table import NO_TIER, measure_layout_quality


def _model_with(tmp_path: Path, table: list | None):  # noqa: ANN202
    codec = envelope_codec(2)
    x = torch.from_numpy(vowel(SR, 2.0, seed=5))[None, None]
    counts = np.zeros((len(codec.table_sizes()), max(codec.table_sizes())), np.int64)
    for t in (None, 0, 1):
        found = estimate_frequencies([codec.encode(x, envelope=t).numpy()[0]], codec.code_sizes(None, t))
        counts[codec.table_rows(codec.layout(None, t))] = found
    extra = {} if table is None else {"layout_quality": {"metric": "mel_distance", "seconds": 1, "table": table}}
    save_model(codec, tmp_path / "m", code_counts=torch.from_numpy(counts), extra_meta=extra)
    return codec, load_model(tmp_path / "m")


def test_measured_table_scores_every_layout_as_decode_does() -> None:
    codec = envelope_codec(1)
    audio = [torch.from_numpy(vowel(SR, 1.0, seed=s))[None, None] for s in (3, 4)]
    table = measure_layout_quality(codec, [torch.cat(audio)])
    tiers = [NO_TIER, 0, 1]
    assert [(n, t) for n, t, _ in table] == [(n, t) for n in range(1, codec.n_q + 1) for t in tiers]
    # Each value is the mel distance of what encode + decode of that layout gives, averaged over the clips.
    mel = MultiScaleMelLoss(SR).eval()
    for n, t, value in table[::4]:
        tier = None if t == NO_TIER else t
        got = [float(mel(codec.decode(codec.encode(a, n, tier), tier), a)) for a in audio]
        assert value == pytest.approx(np.mean(got), rel=1e-3, abs=1e-4)
    with pytest.raises(ValueError, match="no audio"):
        measure_layout_quality(codec, [])


def test_plan_sends_the_best_measured_layout_that_fits(tmp_path: Path) -> None:
    # Made-up values: stages are worth more than band gains here, tier 1 more than tier 0.
    table = [
        [n, t, 1.0 - 0.1 * n - (0.05 if t == 1 else 0.0) - (0.01 if t == 0 else 0.0)]
        for n in range(1, 5)
        for t in (NO_TIER, 0, 1)
    ]
    codec, model = _model_with(tmp_path, table)
    rate = {(n, t): model.bitrate(codec.layout(n, t)) * RATE_MARGIN for n in range(1, 5) for t in (None, 0, 1)}
    assert model.plan(kbps=100) == codec.layout(4, 1)
    budget = rate[(3, 1)] + 1e-6
    fits = [k for k, r in rate.items() if r <= budget]
    best = min(fits, key=lambda k: table[(k[0] - 1) * 3 + (0 if k[1] is None else k[1] + 1)][2])
    assert model.plan(kbps=budget) == codec.layout(*best)
    # The fixed rule (costliest band gains, then stages) would pick otherwise where the table disagrees.
    _, plain = _model_with(tmp_path / "plain", None)
    assert plain.plan(kbps=100) == codec.layout(4, 0)
    # Layouts missing from the table are not chosen while one in it fits; none fitting: the cheapest.
    _, partial = _model_with(tmp_path / "partial", [[1, -1, 0.9], [2, -1, 0.5]])
    assert partial.plan(kbps=100) == codec.layout(2, None)
    assert partial.plan(kbps=1e-3) == codec.layout(1, None)
    assert _quality_table({"table": [[1, -1]]}) == {} and _quality_table(None) == {}


def test_export_measures_the_table_when_asked(tmp_path: Path) -> None:
    _trained_tiny(tmp_path / "ckpt" / "model")
    data = tmp_path / "audio"
    data.mkdir()
    sf.write(data / "clip.wav", _speechlike(3.0, 1), 16000)
    out = tmp_path / "tiny"
    argv = ["export", str(tmp_path / "ckpt"), "-o", str(out), "--data", str(data), "--seconds", "2"]
    assert main([*argv, "--quality-seconds", "2"]) == 0
    quality = read_model(out).extra["layout_quality"]
    assert quality["metric"] == "mel_distance" and quality["seconds"] == 2.0
    values = [v for _, _, v in quality["table"]]
    assert [(n, t) for n, t, _ in quality["table"]] == [(n, NO_TIER) for n in range(1, 5)]
    assert all(np.isfinite(values)) and values[-1] < values[0]  # more stages, closer
    assert load_model(out).layout_quality[(4, None)] == values[-1]
    assert main([*argv, "-o", str(tmp_path / "plain")]) == 0
    assert "layout_quality" not in read_model(tmp_path / "plain").extra
