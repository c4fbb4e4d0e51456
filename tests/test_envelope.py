"""Band-energy corrections (models/envelope.py): the module alone, inside a codec, and in `.rcq` streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pitch_codec, vowel
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.bitstream import decode_bytes, estimate_frequencies
from rotcodec.bitstream.layout import StreamLayout
from rotcodec.inference import load_model, read_rcq_header
from rotcodec.inference.model import RATE_MARGIN
from rotcodec.models import Codec, CodecConfig, save_model
from rotcodec.models.envelope import BandEnvelope, EnvelopeConfig
from rotcodec.models.harmonic import PITCH_SYMBOLS
from rotcodec.quantize import RVQConfig

SR, HOP = 16000, 320
# 3 dB steps keep the expected symbols exact in the tests below
CFG = EnvelopeConfig(
    edges_hz=[0, 100, 200, 300, 400, 500, 650, 800, 1000, 1250, 1600, 2000, 2500, 3200, 4000, 5500],
    step_db=3.0,
    levels=16,
)
NEUTRAL = CFG.levels // 2

pytestmark = pytest.mark.usefixtures("one_thread")


def band_levels_db(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Level (dB) of x `[time]` between lo and hi Hz, per 20 ms frame."""
    spec = torch.stft(x, 2 * HOP, HOP, window=torch.hann_window(2 * HOP), return_complex=True).abs() ** 2
    freqs = torch.fft.rfftfreq(2 * HOP, 1 / SR)
    return 10 * torch.log10(spec[(freqs >= lo) & (freqs < hi)].sum(0) + 1e-10)


def test_neutral_symbols_pass_the_decode_through() -> None:
    env = BandEnvelope(SR, HOP, CFG)
    y = torch.randn(2, 30 * HOP)
    out = env(y, torch.full((2, CFG.bands, 30), NEUTRAL))
    torch.testing.assert_close(out, y, atol=1e-5, rtol=0)


def test_analysis_measures_and_the_decoder_undoes_a_band_distortion() -> None:
    # The "decode" is the input with 1-4 kHz turned down 9 dB and everything else 6 dB up.
    x = 0.1 * torch.randn(1, SR, generator=torch.Generator().manual_seed(3))
    spec = torch.fft.rfft(x)
    freqs = torch.fft.rfftfreq(SR, 1 / SR)
    y = torch.fft.irfft(spec * torch.where((freqs >= 1000) & (freqs < 4000), 10 ** (-9 / 20), 2.0), n=SR)
    env = BandEnvelope(SR, HOP, CFG)
    symbols = env.analyse(x, y)
    assert symbols.shape == (1, CFG.bands, SR // HOP)
    typical = symbols[0].median(dim=-1).values.tolist()
    # +9 dB in 3 dB steps inside, -6 dB outside; the bands either side of the 15 dB steps catch some leakage
    for lo, got in zip(CFG.edges_hz, typical, strict=True):
        want = NEUTRAL - 2 if lo < 1000 or lo >= 4000 else NEUTRAL + 3
        assert abs(got - want) <= (1 if lo in (800, 1000, 3200, 4000) else 0), (lo, got, want)
    out = env(y, symbols)[0]
    for lo, hi in ((0, 1000), (1250, 3200), (4000, 8000)):
        before = (band_levels_db(y[0], lo, hi) - band_levels_db(x[0], lo, hi))[5:-5].abs().mean()
        after = (band_levels_db(out, lo, hi) - band_levels_db(x[0], lo, hi))[5:-5].abs().mean()
        assert before > 5.0 and after < 1.5, (lo, hi, before, after)


def test_gains_saturate_at_the_symbol_range() -> None:
    env = BandEnvelope(SR, HOP, CFG)
    x = torch.randn(1, 10 * HOP)
    assert (env.analyse(x, 1e-3 * x)[..., 1:-1] == CFG.levels - 1).all()  # +60 dB asked, +21 dB sent
    assert (env.analyse(x, 1e3 * x)[..., 1:-1] == 0).all()
    assert (env.analyse(torch.zeros(1, 10 * HOP), torch.zeros(1, 10 * HOP)) == NEUTRAL).all()  # silence


# with output phase rows: one per 25 Hz bin from 100 to 400 Hz (tests/test_output_phase.py)
PHASE_CFG = EnvelopeConfig(edges_hz=[0, 500, 2000], output_phase_edges_hz=[87.5 + 25 * k for k in range(14)])


@pytest.mark.parametrize("cfg", [CFG, PHASE_CFG], ids=["gains", "gains+phases"])
@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=8))
def test_streamed_analysis_and_synthesis_equal_the_whole_file(cfg: EnvelopeConfig, chunks: list[int]) -> None:
    frames = sum(chunks)
    gen = torch.Generator().manual_seed(frames)
    x, y = torch.randn(2, frames * HOP, generator=gen), torch.randn(2, frames * HOP, generator=gen)
    symbols = torch.stack([torch.randint(0, size, (2, frames), generator=gen) for size in cfg.row_sizes], 1)
    env = BandEnvelope(SR, HOP, cfg)
    whole_symbols, whole = env.analyse(x, y), env(y, symbols)
    with env.streaming():
        # The input runs one frame ahead of the decode, as with the pitch tracker's lookahead.
        parts, start, fed = [], 0, 0
        for n in chunks:
            ahead = min(frames, start + n + 1) * HOP
            parts.append(env.analyse(x[:, fed:ahead], y[:, start * HOP : (start + n) * HOP]))
            start, fed = start + n, ahead
    torch.testing.assert_close(torch.cat(parts, -1), whole_symbols, rtol=0, atol=0)
    with env.streaming():
        parts, start = [], 0
        for n in chunks:
            parts.append(env(y[:, start * HOP : (start + n) * HOP], symbols[..., start : start + n]))
            start += n
        tail = env.flush()
        assert (tail is None) == (frames == 0)
        audio = torch.cat(parts + ([tail] if tail is not None else []), -1)
    torch.testing.assert_close(audio, whole, atol=1e-5, rtol=0)


def test_config_rejects_bad_bands() -> None:
    with pytest.raises(ValueError, match="edges_hz"):
        EnvelopeConfig(edges_hz=[100, 200])
    with pytest.raises(ValueError, match="edges_hz"):
        EnvelopeConfig(edges_hz=[0, 300, 200])
    with pytest.raises(ValueError, match="step_db"):
        EnvelopeConfig(step_db=0)
    with pytest.raises(ValueError, match="need an envelope"):
        CodecConfig(quantizer=RVQConfig(dim=128, n_q=2, codebook_size=16), envelope_tiers=[EnvelopeConfig()])
    with pytest.raises(ValueError, match="Nyquist"):
        BandEnvelope(8000, 160, EnvelopeConfig(edges_hz=[0, 1000, 4000]))


def envelope_codec(seed: int = 0) -> Codec:
    """Tier 0: 5 bands in 3 dB steps; tier 1: 3 bands in 6 dB steps."""
    tiers = [EnvelopeConfig([0, 1000, 3000], 6.0, 5)]
    return pitch_codec(seed, lookahead=1, envelope=EnvelopeConfig([0, 500, 1000, 2000, 4000], 3.0, 16), tiers=tiers)


def band_error_db(codec: Codec, x: torch.Tensor, out: torch.Tensor) -> float:
    edges = codec.config.envelope.edges_hz + [SR / 2]
    errs = [
        (band_levels_db(out[0, 0].detach(), lo, hi) - band_levels_db(x[0, 0], lo, hi)).abs().mean()
        for lo, hi in zip(edges, edges[1:], strict=False)
    ]
    return float(torch.stack(errs).mean())


def test_codec_sends_envelope_rows_after_the_pitch_and_they_bring_the_decode_closer() -> None:
    codec = envelope_codec()
    wav = torch.from_numpy(vowel(SR, 1.0, seed=4))[None, None]
    codes = codec.encode(wav, n_q=2)
    assert codes.shape == (1, 1, 1 + 5 + 2, SR // HOP)
    assert codec.code_sizes(2) == (PITCH_SYMBOLS, 16, 16, 16, 16, 16, 64, 64)
    assert codec.code_sizes(2, envelope=None) == (PITCH_SYMBOLS, 64, 64)
    assert codec.code_sizes(2, envelope=1) == (PITCH_SYMBOLS, 5, 5, 5, 64, 64)
    assert codec.bitrate(codec.layout(2)) == pytest.approx(50 * (7 + 5 * 4 + 2 * 6) / 1000)
    bare = codec.encode(wav, n_q=2, envelope=None)
    assert torch.equal(bare, torch.cat([codes[:, :, :1], codes[:, :, 6:]], 2))
    corrected, uncorrected = codec.decode(codes), codec.decode(bare, envelope=None)
    assert corrected.shape == uncorrected.shape == (1, 1, SR)
    # An untrained decoder's levels are far off; the sent gains pull every band towards the input's.
    assert band_error_db(codec, wav, corrected) < 0.5 * band_error_db(codec, wav, uncorrected)
    with pytest.raises(ValueError, match="code rows"):
        codec.decode(codes[:, :, :6])
    coarse = codec.encode(wav, n_q=2, envelope=1)
    assert torch.equal(torch.cat([coarse[:, :, :1], coarse[:, :, 4:]], 2), bare)
    assert band_error_db(codec, wav, codec.decode(coarse, envelope=1)) < band_error_db(codec, wav, uncorrected)
    for bad in (True, 2, -1):  # True is not tier 1: a bool is refused, as is a tier the model lacks
        with pytest.raises(ValueError, match="envelope"):
            codec.encode(wav, n_q=2, envelope=bad)


def test_table_rows_pick_each_layouts_rows_from_the_model_tables() -> None:
    codec = envelope_codec()
    assert codec.table_sizes() == (PITCH_SYMBOLS, *[16] * 5, *[5] * 3, *[64] * 4)
    assert codec.table_rows(codec.layout(1, None)) == [0, 9]
    assert codec.table_rows(codec.layout(2, 0)) == [0, 1, 2, 3, 4, 5, 9, 10]
    assert codec.table_rows(codec.layout(2, 1)) == [0, 6, 7, 8, 9, 10]
    for tier in (None, 0, 1):
        lay = codec.layout(2, tier)
        assert [codec.table_sizes()[r] for r in codec.table_rows(lay)] == list(codec.code_sizes(2, tier))
        assert lay.rows == len(codec.code_sizes(2, tier))


@pytest.mark.parametrize("tier", [0, 1])
def test_codec_with_envelope_streams_like_whole_file(tier: int) -> None:
    codec = envelope_codec(1)
    wav = torch.from_numpy(vowel(SR, 1.2, seed=2))[None, None]
    whole_codes = codec.encode(wav, envelope=tier)
    whole = codec.decode(whole_codes, envelope=tier)
    with codec.streaming():
        parts = [codec.encode(wav[..., i : i + 3 * HOP], envelope=tier) for i in range(0, wav.shape[-1], 3 * HOP)]
        codes = torch.cat(parts + [codec.encode_flush(tier)], -1)
    assert torch.equal(codes, whole_codes)
    with codec.streaming():
        audio = [codec.decode(codes[..., i : i + 4], envelope=tier) for i in range(0, codes.shape[-1], 4)]
        assert audio[0].shape[-1] == 3 * HOP  # one frame behind
        audio.append(codec.decode_flush())
        assert codec.decode_flush() is None
    torch.testing.assert_close(torch.cat(audio, -1), whole, rtol=1e-4, atol=1e-5)


def test_rcq_streams_carry_their_layout_and_the_plan_prefers_band_gains(tmp_path: Path) -> None:
    codec = envelope_codec(2)
    wav = vowel(SR, 2.0, seed=5)
    x = torch.from_numpy(wav)[None, None]
    counts = np.zeros((len(codec.table_sizes()), max(codec.table_sizes())), np.int64)
    for t in (None, 0, 1):  # the pitch and stage rows are the same in every layout
        found = estimate_frequencies([codec.encode(x, envelope=t).numpy()[0]], codec.code_sizes(None, t))
        counts[codec.table_rows(codec.layout(None, t))] = found
    save_model(codec, tmp_path / "m", code_counts=torch.from_numpy(counts))
    model = load_model(tmp_path / "m")
    cost = {t: model.bitrate(codec.layout(1, t)) for t in (None, 0, 1)}
    assert cost[None] < cost[1] < cost[0]  # 3 bands of 5 levels cost less than 5 bands of 16
    assert cost[0] < model.bitrate(codec.layout(1, 0), entropy=False) == pytest.approx(50 * (7 + 20 + 6) / 1000)
    # --kbps: the costliest band gains that fit beside one stage, then as many stages as fit
    assert model.plan(kbps=cost[0] * RATE_MARGIN) == codec.layout(1, 0)
    assert model.plan(kbps=cost[0] * RATE_MARGIN - 1e-3).envelope == 1
    low = cost[1] * RATE_MARGIN - 1e-3
    fits = [n for n in range(1, 5) if model.bitrate(codec.layout(n, None)) * RATE_MARGIN <= low]
    assert model.plan(kbps=low) == codec.layout(max(fits), None)
    assert model.plan(kbps=100) == codec.layout(4, 0) and model.plan() == codec.layout(4, 0)
    assert model.plan(kbps=100, envelope=False) == StreamLayout(4, None, 1, 0)
    assert model.plan(n_q=2) == codec.layout(2, 0)  # --n-q: the trained tier
    for lay in (codec.layout(1, None), codec.layout(1, 1), codec.layout(3, 0)):
        for entropy in (True, False):
            data = model.compress(wav, SR, entropy=entropy, layout=lay)
            header, stream = decode_bytes(data, model.tables(lay))
            assert header.layout == lay
            assert header.codebook_sizes == codec.code_sizes(lay.n_q, lay.envelope)
            expected = codec.encode(x, lay.n_q, lay.envelope)[0]
            np.testing.assert_array_equal(stream, expected.numpy())
            out, sr = model.decompress(data)
            assert sr == SR and out.shape == (1, wav.size)
            decoded = codec.decode(expected[None], lay.envelope)[0].numpy()
            np.testing.assert_allclose(out, decoded[:, : wav.size], atol=1e-5)


def test_training_sees_the_corrected_output_and_its_gradient() -> None:
    codec = envelope_codec(3)
    wav = torch.from_numpy(vowel(SR, 1.0, seed=7))[None, None]
    audio = codec(wav).audio.detach().requires_grad_(True)
    corrected = codec.correct_levels(wav, audio)
    assert corrected.shape == wav.shape
    assert band_error_db(codec, wav, corrected) < 0.5 * band_error_db(codec, wav, audio)
    corrected.pow(2).sum().backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all() and audio.grad.abs().sum() > 0


def test_kbps_is_a_ceiling_for_files_of_ten_seconds_or_more(tmp_path: Path) -> None:
    """Planned from the file's own audio (band gains priced at the stage count sent), header and
    chunk records included, the whole file stays within the requested rate, on audio unlike the tables'."""
    codec = envelope_codec(4)
    table_audio = torch.from_numpy(vowel(SR, 3.0, seed=1))[None, None]
    rows = codec.table_codes(table_audio)
    counts = np.zeros((len(codec.table_sizes()), max(codec.table_sizes())), np.int64)
    for r, (codes, k) in enumerate(zip(rows, codec.table_sizes(), strict=True)):
        counts[r, :k] = np.bincount(codes.reshape(-1).numpy(), minlength=k)
    save_model(codec, tmp_path / "m", code_counts=torch.from_numpy(counts))
    model = load_model(tmp_path / "m")
    rng = np.random.default_rng(0)
    for seconds, seed in ((10.0, 8), (14.0, 9)):
        wav = vowel(SR, seconds, seed=seed) + 0.05 * rng.standard_normal(int(SR * seconds)).astype(np.float32)
        sent = set()
        for kbps in (1.0, 1.5, 2.0, 3.0, 4.0):
            data = model.compress(wav, SR, kbps=kbps)
            assert len(data) * 8 / seconds / 1000 <= kbps
            sent.add(read_rcq_header(data).layout)
        assert len(sent) >= 3  # the rates chose different layouts
