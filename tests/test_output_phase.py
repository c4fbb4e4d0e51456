"""Output phase rows (models/envelope.py): the phase of the decode against the input in narrow bands, measured by
the encoder and applied by the decoder beside the band gains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pitch_codec, vowel

from rotcodec.inference import load_model
from rotcodec.models import save_model
from rotcodec.models.envelope import BandEnvelope, EnvelopeConfig
from rotcodec.models.io import model_hash

SR, HOP = 16000, 320
BINS = [87.5, 112.5, 137.5, 162.5, 187.5, 212.5, 237.5, 262.5, 287.5, 312.5, 337.5, 362.5, 387.5, 412.5]  # 100..400 Hz
CFG = EnvelopeConfig(edges_hz=[0, 500, 2000], step_db=3.0, levels=16, output_phase_edges_hz=BINS)
NEUTRAL = CFG.levels // 2

pytestmark = pytest.mark.usefixtures("one_thread")


def tones(phases: dict[float, float], seconds: float = 1.0) -> torch.Tensor:
    """Sum of unit sines {Hz: phase (radians)} `[1, time]`."""
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return sum(0.1 * torch.sin(2 * torch.pi * f * t + p) for f, p in phases.items()).float()[None]


def test_rows_follow_the_band_gains_and_count_in_the_tier() -> None:
    assert (CFG.bands, CFG.output_phases, CFG.envelope_rows, CFG.rows) == (3, 13, 16, 16)
    assert CFG.row_sizes == (16,) * 3 + (8,) * 13
    with_harmonics = EnvelopeConfig(edges_hz=[0, 500], output_phase_edges_hz=[100, 200, 300], phase_harmonics=4)
    assert with_harmonics.rows == 2 + 2 + 4 and with_harmonics.row_sizes == (5, 5, 8, 8, 16, 16, 16, 16)


def test_analysis_measures_and_the_decoder_undoes_a_phase_shift() -> None:
    # The "decode" lags the input by 90 degrees at 200 Hz and 3 steps of 45 degrees at 300 Hz; 1 kHz is in phase.
    x = tones({200.0: 0.0, 300.0: 0.0, 1000.0: 0.0})
    y = tones({200.0: -np.pi / 2, 300.0: -3 * np.pi / 4, 1000.0: 0.0})
    env = BandEnvelope(SR, HOP, CFG)
    symbols = env.analyse(x, y)
    assert symbols.shape == (1, CFG.envelope_rows, SR // HOP)
    phases = symbols[0, CFG.bands :, 2:-2]
    # bins 200 and 300 Hz and their neighbours in the Hann window's main lobe: +2 and +3 eighths of a turn
    assert (phases[3:6] == 2).all() and (phases[7:10] == 3).all()
    assert (phases[[0, 1, 2, 6, 10, 11, 12]] == 0).all()  # bins the window keeps the tones out of: gated to 0
    assert (symbols[0, : CFG.bands, 2:-2] == NEUTRAL).all()  # levels were right already
    out = env(y, symbols)
    before = (y - x)[:, 2 * HOP : -2 * HOP].pow(2).mean()
    after = (out - x)[:, 2 * HOP : -2 * HOP].pow(2).mean()
    assert after < 0.01 * before, (float(before), float(after))


def test_neutral_rows_pass_the_decode_through() -> None:
    env = BandEnvelope(SR, HOP, CFG)
    y = torch.randn(2, 30 * HOP)
    rows = torch.cat([torch.full((2, CFG.bands, 30), NEUTRAL), torch.zeros(2, CFG.output_phases, 30).long()], 1)
    torch.testing.assert_close(env(y, rows), y, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="envelope rows"):
        env(y, rows[:, : CFG.bands])


def test_quiet_bands_send_no_rotation() -> None:
    # 200 Hz 90 dB below a 1 kHz tone, 2 radians off: under the -30 dB gate it sends 0, under -120 dB it is sent.
    x = 30 * tones({1000.0: 0.0}) + 1e-3 * tones({200.0: 1.0})
    y = 30 * tones({1000.0: 0.0}) + 1e-3 * tones({200.0: -1.0})
    row = CFG.bands + 4  # the 200 Hz bin
    assert (BandEnvelope(SR, HOP, CFG).analyse(x, y)[0, row, 2:-2] == 0).all()
    loud = EnvelopeConfig(edges_hz=[0, 500, 2000], output_phase_edges_hz=BINS, output_phase_gate_db=-120.0)
    assert (BandEnvelope(SR, HOP, loud).analyse(x, y)[0, row, 2:-2] == 3).all()  # 2 rad = 2.5 eighths of a turn


def test_config_rejects_bad_phase_settings() -> None:
    for bad in ([100], [200, 100], [-10, 100]):
        with pytest.raises(ValueError, match="output_phase_edges_hz"):
            EnvelopeConfig(output_phase_edges_hz=bad)
    with pytest.raises(ValueError, match="output_phase_levels"):
        EnvelopeConfig(output_phase_edges_hz=[100, 200], output_phase_levels=1)
    with pytest.raises(ValueError, match="min_stages"):
        EnvelopeConfig(min_stages=0)
    with pytest.raises(ValueError, match="above Nyquist"):
        BandEnvelope(8000, 160, EnvelopeConfig(edges_hz=[0, 1000], output_phase_edges_hz=[100, 4100]))


def phase_codec(**outphase: object):  # noqa: ANN201
    """Tier 0: 4 bands; tier 1: 2 bands plus output phases 100-400 Hz (`outphase` overrides its settings)."""
    settings_ = {"output_phase_edges_hz": BINS, "min_stages": 3, **outphase}
    tiers = [EnvelopeConfig([0, 1000], 6.0, 5, **settings_)]
    return pitch_codec(0, lookahead=1, envelope=EnvelopeConfig([0, 500, 1000, 2000], 3.0, 16), tiers=tiers)


def test_hash_ignores_encoder_only_settings_and_not_the_phase_bands() -> None:
    base = model_hash(phase_codec())
    assert model_hash(phase_codec(min_stages=1, output_phase_gate_db=-60.0)) == base
    assert model_hash(phase_codec(output_phase_levels=16)) != base
    assert model_hash(phase_codec(output_phase_edges_hz=BINS[:-1])) != base


def test_codec_round_trip_brings_the_low_band_phase_closer_and_streams_like_whole_file() -> None:
    codec = phase_codec()
    x = torch.from_numpy(vowel(SR, 1.5, seed=4))[None, None]
    codes = codec.encode(x, n_q=3, envelope=1)
    assert codes.shape[2] == 1 + 2 + len(BINS) - 1 + 3
    with_phase = codec.decode(codes, envelope=1)
    unrotated = codes.clone()
    unrotated[:, :, 3 : 3 + len(BINS) - 1] = 0
    without = codec.decode(unrotated, envelope=1)

    def alignment(y: torch.Tensor) -> float:
        """Energy-weighted cosine of the decode's phase against the input's, 100-400 Hz."""
        window = torch.hann_window(2 * HOP)
        sx, sy = (torch.stft(s[0, 0], 2 * HOP, HOP, window=window, return_complex=True)[4:17] for s in (x, y))
        return float((sx * sy.conj()).real.sum() / (sx.abs() * sy.abs()).sum())

    assert alignment(with_phase) > alignment(without) + 0.2, (alignment(with_phase), alignment(without))
    with codec.streaming():
        parts = [codec.encode(x[..., i : i + 4 * HOP], n_q=3, envelope=1) for i in range(0, x.shape[-1], 4 * HOP)]
        tail = codec.encode_flush(envelope=1)
    streamed = torch.cat([*parts, *([tail] if tail is not None else [])], -1)
    torch.testing.assert_close(streamed, codes, rtol=0, atol=0)


def test_planning_sends_a_tier_only_with_its_min_stages(tmp_path: Path) -> None:
    save_model(phase_codec(), tmp_path / "m")
    model = load_model(tmp_path / "m")
    layouts = model.layouts()
    assert {lay.n_q for lay in layouts if lay.envelope == 1} == {3, 4}
    assert {lay.n_q for lay in layouts if lay.envelope == 0} == {1, 2, 3, 4}
    x = vowel(SR, 2.0, seed=2)
    for kbps in (1.0, 2.0, 4.0, 8.0, 30.0):
        lay = model.plan(kbps=kbps, entropy=False)
        assert lay.envelope != 1 or lay.n_q >= 3, (kbps, lay)
    assert model.plan(kbps=30.0, entropy=False).envelope == 1  # the costliest tier, once it fits
    assert len(model.compress(x, SR, kbps=30.0, entropy=False)) > 0
    assert model.describe(model.codec.layout(3, 1)) == "n_q 3 + pitch + 2 band gains + 13 output phases (tier 1)"


@pytest.mark.parametrize("priority", [0, 1])
def test_planning_prefers_a_tier_of_higher_priority_to_a_costlier_one(tmp_path: Path, priority: int) -> None:
    # tier 1 (2 gains of 5 levels + 2 phases of 8: 10.6 bits a frame) costs less than tier 0 (4 gains of 16: 16)
    save_model(phase_codec(output_phase_edges_hz=BINS[:3], priority=priority), tmp_path / "m")
    model = load_model(tmp_path / "m")
    assert model.plan(kbps=30.0, entropy=False).envelope == priority
    assert model.plan(kbps=30.0, entropy=False, envelope=True).envelope == priority
