"""Transmitted pitch and the harmonic source (models/harmonic.py), alone and inside a codec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pitch_codec, vowel
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from rotcodec.bitstream import decode_bytes, estimate_frequencies
from rotcodec.dsp.pitch import normalised_autocorrelation
from rotcodec.eval.periodicity import frame_pitch
from rotcodec.inference import load_model
from rotcodec.losses import GeneratorLoss, LossConfig
from rotcodec.losses.harmonic import HarmonicAmplitudeLoss, measured_amplitudes
from rotcodec.models import harmonic as harmonic_module
from rotcodec.models import save_model
from rotcodec.models.harmonic import (
    AMPLITUDE_GAIN,
    PITCH_SYMBOLS,
    HarmonicSynth,
    PitchConfig,
    PitchTracker,
    f0_to_symbols,
    symbols_to_f0,
)
from rotcodec.models.io import model_hash

SR, HOP = 16000, 320


pytestmark = pytest.mark.usefixtures("one_thread")


def cents(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1200 * np.log2(np.asarray(a) / np.asarray(b))


@settings(max_examples=50, deadline=None)
@given(st.floats(60.0, 400.0))
def test_pitch_symbols_round_trip_within_half_a_bin(f0: float) -> None:
    sym = f0_to_symbols(torch.tensor([f0]))
    assert 1 <= int(sym) < PITCH_SYMBOLS
    # 126 steps over log2(400/60) octaves: 26 cents apart, so rounding costs at most 13
    assert abs(cents(float(symbols_to_f0(sym)), f0)) <= 13.1


def test_unvoiced_and_out_of_range_pitch() -> None:
    sym = f0_to_symbols(torch.tensor([0.0, float("nan"), 30.0, 1000.0]))
    assert sym.tolist() == [0, 0, 1, PITCH_SYMBOLS - 1]
    assert symbols_to_f0(sym)[:2].tolist() == [0.0, 0.0]


def test_tracker_follows_a_glide_and_mutes_silence() -> None:
    x = torch.from_numpy(vowel(SR, 2.0))[None]  # F0 glides 100-140 Hz
    x[:, : SR // 2] = 0.0
    tracker = PitchTracker(SR, HOP, PitchConfig())
    sym = tracker(x)[0]
    assert sym.shape == (2 * SR // HOP,)
    assert (sym[: SR // 2 // HOP] == 0).all()
    f0 = symbols_to_f0(sym).numpy()[1:]
    ref = frame_pitch(x[0].numpy(), SR)[2 * np.arange(len(f0))]  # 10 ms frames with the same centres
    both = (f0 > 0) & ~np.isnan(ref)
    assert both.sum() > 40
    assert np.sqrt(np.mean(cents(f0[both], ref[both]) ** 2)) < 20
    assert (tracker(0.1 * torch.randn(1, SR, generator=torch.Generator().manual_seed(0))) == 0).float().mean() > 0.9


@pytest.mark.parametrize("lookahead", [0, 1])
@pytest.mark.parametrize("sizes", [[HOP], [7, 500, 13], [HOP * 3 + 1]])
def test_tracker_streams_like_whole_signal(sizes: list[int], lookahead: int) -> None:
    x = torch.from_numpy(np.stack([vowel(SR, 1.5, seed=s) for s in range(2)]))
    tracker = PitchTracker(SR, HOP, PitchConfig(lookahead=lookahead))
    whole = tracker(x)
    parts, start, i = [], 0, 0
    with tracker.streaming():
        while start < x.shape[-1]:
            n = sizes[i % len(sizes)]
            parts.append(tracker(x[:, start : start + n]))
            start, i = start + n, i + 1
        parts.append(tracker(x.new_zeros(2, (-x.shape[-1]) % HOP)))  # the whole-signal pass pads the end
        assert sum(p.shape[-1] for p in parts) == whole.shape[-1] - lookahead  # a frame behind the input
        parts.append(tracker.flush(2))
    assert torch.equal(torch.cat(parts, dim=-1), whole)


def test_tracker_frames_depend_on_their_own_samples_only() -> None:
    # A loud vowel then a quiet one (-50 dB): with a floor relative to the loudest frame in sight, the quiet
    # frames' autocorrelation changed with whether the loud part was in the same call (a stream's chunk).
    loud = torch.from_numpy(vowel(SR, 0.6, seed=1))
    quiet = 10 ** (-50 / 20) * torch.from_numpy(vowel(SR, 0.6, seed=2))
    both = torch.cat([loud, quiet])[None]
    start = loud.shape[-1] // HOP
    relative = normalised_autocorrelation(both, SR, 2 * HOP, HOP)[0][0, start:]
    alone = normalised_autocorrelation(quiet[None], SR, 2 * HOP, HOP)[0][0]
    assert not torch.allclose(relative[: alone.shape[0]], alone, atol=1e-3)
    fixed = normalised_autocorrelation(both, SR, 2 * HOP, HOP, floor_db=-75.0)[0][0, start:]
    fixed_alone = normalised_autocorrelation(quiet[None], SR, 2 * HOP, HOP, floor_db=-75.0)[0][0]
    torch.testing.assert_close(fixed[: fixed_alone.shape[0]], fixed_alone, rtol=1e-4, atol=1e-5)
    tracker = PitchTracker(SR, HOP, PitchConfig())
    assert torch.equal(tracker(both)[0, start + 2 :], tracker(quiet[None])[0, 2:])  # past the 2-hop window


def test_tracker_lookahead_reads_one_frame_later() -> None:
    # The window of frame t with lookahead is the window of frame t + 1 without: the same F0, one frame early.
    x = torch.from_numpy(vowel(SR, 1.5, seed=4))[None]
    x = x * torch.linspace(0.2, 1.0, x.shape[-1])  # changing level and voicing edges as well as pitch
    now, ahead = (PitchTracker(SR, HOP, PitchConfig(lookahead=k))(x)[0] for k in (0, 1))
    assert (now > 0).float().mean() > 0.5
    assert torch.equal(ahead[:-1], now[1:])
    assert not torch.equal(ahead, now)


def synth_with_flat_amplitudes(level: float, harmonics: int = 16) -> HarmonicSynth:
    synth = HarmonicSynth(8, SR, HOP, PitchConfig(harmonics=harmonics, hidden=8))
    last = synth.head[-1].conv
    with torch.no_grad():
        last.bias.fill_(float(np.log(np.expm1(level))) / AMPLITUDE_GAIN)  # softplus^-1: every harmonic at `level`
    return synth


def test_synth_sings_at_the_sent_pitch_and_is_silent_when_unvoiced() -> None:
    synth = synth_with_flat_amplitudes(0.05)
    frames = 50
    sym = f0_to_symbols(torch.full((1, frames), 180.0))
    sym[0, 30:] = 0
    with torch.no_grad():
        y = synth(torch.randn(1, 8, frames), sym)[0, 0].numpy()
    assert y.shape == (frames * HOP,)
    f0 = frame_pitch(y[: 25 * HOP], SR)
    assert np.nanmedian(np.abs(cents(f0, float(symbols_to_f0(sym[0, 0]))))) < 10
    assert np.all(y[31 * HOP :] == 0)  # the frame after the last voiced one fades out; then silence
    assert np.abs(y[30 * HOP : 31 * HOP]).max() > 0


def test_synth_mutes_harmonics_above_nyquist() -> None:
    synth = synth_with_flat_amplitudes(0.05, harmonics=24)
    sym = f0_to_symbols(torch.full((1, 40), 370.0))
    with torch.no_grad():
        y = synth(torch.randn(1, 8, 40), sym)[0, 0].numpy()
    spec = np.abs(np.fft.rfft(y[HOP:] * np.hanning(len(y) - HOP)))
    freqs = np.fft.rfftfreq(len(y) - HOP, 1 / SR)
    # harmonic 20 (7.4 kHz) sounds; 21 (7.77 kHz) passes 0.475 x 16 kHz and 22 would alias to 7.86 kHz
    assert spec[(freqs > 7300) & (freqs < 7500)].max() > 0.1 * spec.max()
    assert spec[freqs > 7650].max() < 1e-3 * spec.max()


def test_residual_gain_starts_at_one_and_can_silence_the_residual() -> None:
    synth = synth_with_flat_amplitudes(0.02)
    z, sym = torch.randn(1, 8, 20), f0_to_symbols(torch.full((1, 20), 150.0))
    residual = torch.randn(1, 1, 20 * HOP)
    with torch.no_grad():
        harmonics = synth(z, sym)
        torch.testing.assert_close(synth(z, sym, residual), harmonics + residual)
        synth.gain_head.conv.bias.fill_(-2.0)  # gain 2 sigmoid(-20) ~ 4e-9
        torch.testing.assert_close(synth(z, sym, residual), harmonics, atol=1e-6, rtol=0)


def test_synth_streams_like_whole_signal() -> None:
    synth = synth_with_flat_amplitudes(0.02)
    torch.manual_seed(0)
    z = torch.randn(2, 8, 60)
    f0 = 120 + 60 * torch.rand(2, 60)
    f0[:, 10:14] = 0
    f0[1, 40:] = 0
    sym = f0_to_symbols(f0)
    residual = torch.randn(2, 1, 60 * HOP)
    with torch.no_grad():
        synth.gain_head.conv.bias.fill_(0.05)
        synth.gain_head.conv.parametrizations.weight.original0.fill_(0.1)  # a gain that varies by frame
        whole = synth(z, sym, residual)
        with synth.streaming():
            parts = [
                synth(z[..., i : i + 7], sym[:, i : i + 7], residual[..., i * HOP : (i + 7) * HOP])
                for i in range(0, 60, 7)
            ]
    torch.testing.assert_close(torch.cat(parts, dim=-1), whole, rtol=1e-4, atol=1e-5)


def _harmonics_per_sample(synth: HarmonicSynth, z: torch.Tensor, sym: torch.Tensor, phases: torch.Tensor) -> Tensor:
    """The harmonic source written out: an amplitude per sample and harmonic times sines `[batch, harmonics,
    time]`, summed over harmonics (what the synthesiser's per-frame contraction computes)."""
    amps = synth.amplitudes(z)
    track = synth._track(sym, torch.float32)
    k = synth.orders[None, :, None]
    args = k * track["phase"].float().unsqueeze(1)
    args[:, : phases.shape[1]] += synth._offsets(phases, 16).float()
    audible = (k * torch.maximum(track["start_f0"], track["filled"]).unsqueeze(1) < 0.475 * SR).float()
    start = torch.cat([amps[..., :1], amps[..., :-1]], dim=-1) * audible
    ramp = torch.arange(1, HOP + 1) / HOP
    a = (start.unsqueeze(-1) + (amps * audible - start).unsqueeze(-1) * ramp).flatten(-2)
    was, now = track["was_voiced"], track["voiced"]
    gate = (was.unsqueeze(-1) + (now - was).unsqueeze(-1) * ramp).flatten(-2)
    return (a * torch.sin(args)).sum(1, keepdim=True) * gate.unsqueeze(1)


def random_synth(seed: int) -> HarmonicSynth:
    """24 harmonics, amplitudes from a random head (the global RNG seeded with `seed`)."""
    torch.manual_seed(seed)
    synth = HarmonicSynth(8, SR, HOP, PitchConfig(harmonics=24, hidden=8))
    with torch.no_grad():
        for p in synth.head.parameters():
            p.normal_(0.0, 0.1)
    return synth


def test_synth_equals_the_per_sample_sum() -> None:
    synth = random_synth(2)
    z = torch.randn(2, 8, 12)
    f0 = 100 + 250 * torch.rand(2, 12)
    f0[:, 4:6] = 0
    sym = f0_to_symbols(f0)
    phases = torch.randint(0, 16, (2, 3, 12))
    fast = synth(z, sym, phases=phases)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), synth.head[0].conv.bias)
    slow = _harmonics_per_sample(synth, z, sym, phases)
    (g_slow,) = torch.autograd.grad(slow.square().sum(), synth.head[0].conv.bias)
    assert fast.abs().max() > 0.1
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5 * slow.abs().max().item())
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-5 * g_slow.abs().max().item())


@pytest.mark.parametrize("chunk", [1, 3 * HOP * 24, 1 << 40])
def test_inference_source_equals_the_per_sample_sum(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU inference path computes only the harmonics that sound, a chunk of frames at a time: chunks of
    one frame, of three, and the whole call give the written-out sum, through silences, high voices (few
    audible harmonics) and phase offsets."""
    monkeypatch.setattr(harmonic_module, "_CHUNK_ELEMENTS", chunk)
    synth = random_synth(3)
    z = torch.randn(2, 8, 30)
    f0 = 100 + 40 * torch.rand(2, 30)
    f0[:, 8:17] = 0  # silent in both channels: whole chunks with nothing to compute
    f0[0, 20:26] = 390.0  # a high voice in one channel: its frames need fewer harmonics than the other's
    f0[1, 24:] = 0
    sym = f0_to_symbols(f0)
    phases = torch.randint(0, 16, (2, 3, 30))
    with torch.no_grad():
        fast = synth(z, sym, phases=phases)
        slow = _harmonics_per_sample(synth, z, sym, phases)
    assert fast.abs().max() > 0.1
    assert torch.all(fast[..., 10 * HOP : 16 * HOP] == 0)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5 * slow.abs().max().item())


def test_codec_sends_pitch_first_and_counts_its_bits() -> None:
    codec = pitch_codec()
    wav = torch.from_numpy(vowel(SR, 1.0))[None, None]
    codes = codec.encode(wav, n_q=2)
    assert codes.shape == (1, 1, 3, SR // HOP)
    assert codes[0, 0, 0].max() < PITCH_SYMBOLS and (codes[0, 0, 0] > 0).float().mean() > 0.5
    assert codec.code_sizes(2) == (PITCH_SYMBOLS, 64, 64)
    assert codec.bitrate(codec.layout(2)) == pytest.approx(50 * (7 + 2 * 6) / 1000)
    assert codec.decode(codes).shape == (1, 1, SR)
    with pytest.raises(ValueError, match="code rows"):
        codec.decode(codes[:, :, 1:2])
    bad = codes.clone()
    bad[0, 0, 0, 0] = PITCH_SYMBOLS
    with pytest.raises(ValueError, match="out of range"):
        codec.decode(bad)


def test_lookahead_is_left_out_of_the_model_hash() -> None:
    # An encoder-only setting: files written before it existed must still find their model by hash.
    now, ahead = pitch_codec(3, 0), pitch_codec(3, 1)
    assert model_hash(now) == model_hash(ahead)
    wav = torch.from_numpy(vowel(SR, 1.0, seed=6))[None, None]
    assert not torch.equal(now.encode(wav), ahead.encode(wav))


@pytest.mark.parametrize("lookahead", [0, 1])
def test_codec_with_pitch_streams_like_whole_file(lookahead: int) -> None:
    codec = pitch_codec(1, lookahead)
    wav = torch.from_numpy(vowel(SR, 1.2, seed=2))[None, None]
    whole_codes = codec.encode(wav)
    whole = codec.decode(whole_codes)
    with codec.streaming():
        parts = [codec.encode(wav[..., i : i + 3 * HOP]) for i in range(0, wav.shape[-1], 3 * HOP)]
        tail = codec.encode_flush()
        assert (tail is None) == (lookahead == 0)
        codes = torch.cat(parts + ([tail] if tail is not None else []), -1)
        assert codec.encode_flush() is None  # nothing is left after a flush
    assert torch.equal(codes, whole_codes)
    with codec.streaming():
        audio = torch.cat([codec.decode(codes[..., i : i + 4]) for i in range(0, codes.shape[-1], 4)], -1)
    torch.testing.assert_close(audio, whole, rtol=1e-4, atol=1e-5)


def test_rcq_round_trip_with_pitch_row_and_entropy_tables(tmp_path: Path) -> None:
    codec = pitch_codec(2, lookahead=1)
    save_model(codec, tmp_path / "plain")
    model = load_model(tmp_path / "plain")
    wav = vowel(SR, 2.0, seed=5)
    data = model.compress(wav, SR, kbps=1.1)  # 0.35 kbps of pitch + 2 stages of 0.3 kbps + the header over 10 s
    header, codes = decode_bytes(data)
    assert header.codebook_sizes == (PITCH_SYMBOLS, 64, 64)
    assert codes.shape == (1, 3, SR * 2 // HOP)
    # Streamed block by block, the lookahead's last frame included, the codes are the whole-file pass's.
    np.testing.assert_array_equal(codes, codec.encode(torch.from_numpy(wav)[None, None], n_q=2).numpy()[0])
    out, sr = model.decompress(data)
    assert sr == SR and out.shape == (1, wav.size)
    expected = codec.decode(torch.from_numpy(codes)[None]).numpy()[0]
    np.testing.assert_allclose(out, expected[:, : wav.size], atol=1e-5)

    counts = estimate_frequencies([codes], [PITCH_SYMBOLS] + [64] * 4)  # [5, 128]: the widest row
    save_model(codec, tmp_path / "ent", code_counts=torch.from_numpy(counts))
    ent = load_model(tmp_path / "ent")
    packed = ent.compress(wav, SR, n_q=2)
    plain = ent.compress(wav, SR, n_q=2, entropy=False)
    assert len(packed) < len(plain)
    np.testing.assert_array_equal(ent.decompress(packed)[0], ent.decompress(plain)[0])


def test_measured_amplitudes_read_a_known_harmonic_series() -> None:
    t = torch.arange(SR) / SR
    levels = [0.3, 0.1, 0.02]
    x = sum(a * torch.sin(2 * torch.pi * 150 * (k + 1) * t + k) for k, a in enumerate(levels))[None]
    f0 = torch.full((1, SR // HOP), 150.0)
    f0[0, :3] = 0
    amps, mask = measured_amplitudes(x, f0, SR, HOP, 5)
    mid = amps[0, :, 10:40]
    for k, a in enumerate(levels):  # Hann scalloping costs at most 1.4 dB
        assert (mid[k] / a).min() > 0.84 and (mid[k] / a).max() <= 1.01
    assert mid[3:].max() < 1e-3
    assert not mask[0, :, :3].any() and mask[0, :, 3:].all()


def test_harmonic_loss_pulls_amplitudes_towards_the_reference() -> None:
    t = torch.arange(SR) / SR
    x = (0.2 * torch.sin(2 * torch.pi * 200 * t))[None]
    f0 = torch.full((1, SR // HOP), 200.0)
    loss = HarmonicAmplitudeLoss(SR, HOP)
    quiet = torch.full((1, 4, SR // HOP), 1e-3, requires_grad=True)
    value = loss(x, f0, quiet)
    value.backward()
    assert value > 1.0 and quiet.grad[:, 0].sum() < 0  # the fundamental is too quiet: the loss asks for more
    assert quiet.grad[:, 1:].sum() > 0  # harmonics 2-4 are absent from the reference: less
    right = measured_amplitudes(x, f0, SR, HOP, 4)[0]
    assert loss(x, f0, right) == 0
    assert loss(x, torch.zeros_like(f0), quiet) == 0  # nothing voiced, nothing to learn
    with pytest.raises(ValueError, match="hop_length"):
        GeneratorLoss(LossConfig(harmonic=1.0), SR)(x[None], x[None], harmonic=(f0, quiet))
    _, parts = GeneratorLoss(LossConfig(harmonic=1.0), SR, HOP)(x[None], x[None], harmonic=(f0, quiet))
    assert parts["harmonic"] == value.detach()
