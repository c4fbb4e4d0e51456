"""Phase rows: the encoder measures the input's harmonic phases against the harmonic source's own, the decoder
locks the source to them, and both stream like the whole file."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import pitch_codec, vowel
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.models import Codec
from rotcodec.models.envelope import EnvelopeConfig
from rotcodec.models.harmonic import HarmonicSynth, PitchConfig

SR, HOP = 16000, 320


def phase_codec(seed: int = 0) -> Codec:
    """Tier 0: 3 bands; tier 1: the same plus the phases of 3 harmonics in 8 steps."""
    bands = EnvelopeConfig([0, 1000, 3000], 6.0, 5)
    tiers = [EnvelopeConfig([0, 1000, 3000], 6.0, 5, phase_harmonics=3, phase_levels=8)]
    return pitch_codec(seed, lookahead=1, envelope=bands, tiers=tiers)


@settings(max_examples=20, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 15), min_size=4, max_size=4),
    symbol=st.integers(20, 120),
)
def test_lock_reads_back_the_phases_of_a_harmonic_input(offsets: list[int], symbol: int) -> None:
    synth = HarmonicSynth(8, SR, HOP, PitchConfig(harmonics=16, hidden=8))
    frames = 12
    symbols = torch.full((1, frames), symbol)
    symbols[0, 5] = 0  # an unvoiced frame sends 0
    phi = synth._track(symbols, torch.float64)["phase"]
    step = 2 * math.pi / 16
    # cos(k phi + d) is sin(k phi + d + pi / 2): the symbol is d / step + 4 (a quarter turn of 16 steps)
    x = sum(0.2 * torch.cos(k * phi + offsets[k - 1] * step) for k in range(1, 5))
    got = synth.lock(x.float(), symbols, 4, 16)
    want = torch.tensor([(d + 4) % 16 for d in offsets])[:, None].expand(4, frames).clone()
    # a steady F0 throughout, apart from frame 5 (its glide) and the last frame (read against zeros past the end)
    for f in [0, 1, 2, 3, 7, 8, 9, 10]:
        assert torch.equal(got[0, :, f], want[:, f]), f
    assert torch.equal(got[0, :, 5], torch.zeros(4, dtype=torch.long))


def test_locked_harmonics_follow_the_input_and_free_ones_do_not() -> None:
    synth = HarmonicSynth(8, SR, HOP, PitchConfig(harmonics=16, hidden=8))
    frames = 20
    symbols = torch.full((1, frames), 60)
    phi = synth._track(symbols, torch.float64)["phase"]
    x = torch.cos(phi + 2.0).float()  # the fundamental alone, 2 rad off the source's phase (free: corr -0.91)
    z = torch.zeros(1, 8, frames)
    amps = torch.zeros(1, 16, frames)
    amps[:, 0] = 0.5
    free = synth(z, symbols, amps=amps)[0, 0]
    locked = synth(z, symbols, amps=amps, phases=synth.lock(x, symbols, 1, 16), phase_levels=16)[0, 0]
    steady = slice(2 * HOP, (frames - 1) * HOP)

    def corr(a: torch.Tensor) -> float:
        ref = x[0, steady]
        return float(torch.dot(a[steady], ref) / (a[steady].norm() * ref.norm()))

    assert corr(locked) > 0.95
    assert corr(free) < 0.5


def test_phase_rows_follow_the_band_gains_and_count_in_the_layout() -> None:
    codec = phase_codec()
    lay = codec.layout(2, 1)
    assert lay.envelope_rows == 3 + 3
    assert codec.code_sizes(2, 1) == (128, 5, 5, 5, 8, 8, 8, 64, 64)
    sizes = codec.table_sizes()
    assert [sizes[r] for r in codec.table_rows(lay)] == list(codec.code_sizes(2, 1))
    wav = torch.from_numpy(vowel(SR, 1.0, seed=3))[None, None]
    codes = codec.encode(wav, n_q=2, envelope=1)
    assert codes.shape[2] == lay.rows
    assert int(codes[0, 0, 4:7].max()) < 8 and bool((codes[0, 0, 4:7] > 0).any())
    # the table rows of tier 1 are what a stream of tier 1 with every stage sends
    table = codec.table_codes(wav)
    full = codec.encode(wav, envelope=1)[0, 0]
    for row, stream_row in zip(codec.table_rows(codec.layout(None, 1)), range(full.shape[0]), strict=True):
        assert torch.equal(table[row][0], full[stream_row]), row


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_phase_locked_codec_streams_like_whole_file(chunk: int) -> None:
    codec = phase_codec(1)
    wav = torch.from_numpy(vowel(SR, 1.2, seed=2))[None, None]
    whole_codes = codec.encode(wav, envelope=1)
    whole = codec.decode(whole_codes, envelope=1)
    with codec.streaming():
        step = chunk * HOP
        parts = [codec.encode(wav[..., i : i + step], envelope=1) for i in range(0, wav.shape[-1], step)]
        codes = torch.cat(parts + [codec.encode_flush(1)], -1)
    assert torch.equal(codes, whole_codes)
    with codec.streaming():
        audio = [codec.decode(codes[..., i : i + chunk], envelope=1) for i in range(0, codes.shape[-1], chunk)]
        audio.append(codec.decode_flush())
    torch.testing.assert_close(torch.cat(audio, -1), whole, rtol=1e-4, atol=1e-5)


def test_phase_tiers_need_a_pitch_model_and_valid_settings() -> None:
    with pytest.raises(ValueError, match="phase"):
        EnvelopeConfig([0, 1000], 6.0, 5, phase_harmonics=-1)
    with pytest.raises(ValueError, match="phase"):
        EnvelopeConfig([0, 1000], 6.0, 5, phase_levels=1)


def test_shared_decodes_equal_separate_ones_and_run_the_decoder_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pricing and export decode free-running and phase-locked variants of the same codes with one SEANet pass.
    codec = phase_codec(3)
    torch.nn.init.constant_(codec.harmonic.head[-1].conv.bias, -0.2)  # audible harmonics: the lock matters
    wav = torch.from_numpy(vowel(SR, 1.0, seed=5))[None, None]
    with torch.no_grad():
        codes = codec.encode(wav, n_q=2, envelope=None)[:, 0]
        lock = codec._lock(wav[:, 0, :], codes[:, 0], 3, 16)
        separate = {None: codec._synthesise(codes), "locked": codec._synthesise(codes, lock, 16)}
        calls = []
        decoder = codec.decoder.forward
        monkeypatch.setattr(codec.decoder, "forward", lambda *a: calls.append(1) or decoder(*a))
        shared = codec.synthesise_variants(codes, {None: (None, 16), "locked": (lock, 16)})
    assert len(calls) == 1
    assert float((separate["locked"] - separate[None]).abs().max()) > 1e-5  # the lock moves the source
    for key, y in separate.items():
        assert torch.equal(shared[key], y)
