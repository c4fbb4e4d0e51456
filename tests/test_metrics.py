"""Tests for rotcodec.eval.metrics and rotcodec.eval.align on generated speech-like and music-like audio."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from conftest import vowel
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.eval import align as al
from rotcodec.eval import metrics as m

SR = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return vowel()


def test_identical_signals_score_ideal(speech: np.ndarray) -> None:
    report = m.evaluate(speech, speech.copy(), SR)
    v = report.values
    assert report.notes == {}
    assert tuple(v) == m.metric_names(speech=True)  # the eval runner resumes on this list
    assert tuple(m.evaluate(speech, speech, SR, speech=False).values) == m.metric_names(speech=False)
    assert v["si_sdr"] == np.inf or v["si_sdr"] > 100
    assert v["mel_distance"] == pytest.approx(0.0, abs=1e-7)
    assert v["mrstft"] == pytest.approx(0.0, abs=1e-6)
    assert v["stoi"] > 0.999
    assert 4.5 < v["pesq_wb"] <= 4.65
    assert v["periodicity_error"] == 0.0


def test_noise_makes_every_metric_worse(speech: np.ndarray) -> None:
    noise = np.random.default_rng(1).standard_normal(speech.size).astype(np.float32)
    light = m.compute_all(speech, speech + 0.003 * noise, SR)
    heavy = m.compute_all(speech, speech + 0.05 * noise, SR)
    for name in ("si_sdr", "mel_distance", "mrstft", "pesq_wb", "stoi", "periodicity_error", "pitch_error"):
        better = light[name] > heavy[name] if m.HIGHER_IS_BETTER[name] else light[name] < heavy[name]
        assert better, (name, light[name], heavy[name])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), a=st.floats(0.01, 10.0), n=st.integers(64, 2000))
def test_si_sdr_matches_closed_form_for_orthogonal_noise(seed: int, a: float, n: int) -> None:
    rng = np.random.default_rng(seed)
    s = rng.standard_normal(n)
    s -= s.mean()
    noise = rng.standard_normal(n)
    noise -= noise.mean()
    noise -= (noise @ s) / (s @ s) * s  # orthogonal to s, still zero-mean
    expected = 10 * np.log10((s @ s) / (a * a * (noise @ noise)))
    assert m.si_sdr(s, s + a * noise) == pytest.approx(expected, rel=1e-6, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    c=st.floats(0.001, 1000.0) | st.floats(-1000.0, -0.001),
    offset=st.floats(-1.0, 1.0),
)
def test_si_sdr_is_scale_and_offset_invariant(seed: int, c: float, offset: float) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(500)
    est = ref + 0.5 * rng.standard_normal(500)
    base = m.si_sdr(ref, est)
    assert m.si_sdr(ref, c * est + offset) == pytest.approx(base, rel=1e-6, abs=1e-6)
    assert m.si_sdr(c * ref + offset, est) == pytest.approx(base, rel=1e-6, abs=1e-6)


def test_si_sdr_edge_cases() -> None:
    ref = np.sin(np.arange(1000) * 0.1)
    assert m.si_sdr(ref, np.zeros(1000)) == -np.inf
    with pytest.warns(m.MetricWarning, match="constant"):
        assert np.isnan(m.si_sdr(np.ones(1000), ref))


def test_multichannel_is_mean_of_channels(speech: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    est = np.stack([speech + 0.01 * rng.standard_normal(speech.size), speech + 0.1 * rng.standard_normal(speech.size)])
    ref = np.stack([speech, speech])
    per_channel = [m.si_sdr(ref[c], est[c]) for c in range(2)]
    assert m.si_sdr(ref, est) == pytest.approx(np.mean(per_channel))
    mel_each = [m.mel_distance(ref[c], est[c], SR) for c in range(2)]
    assert m.mel_distance(ref, est, SR) == pytest.approx(np.mean(mel_each), rel=1e-5)
    mr_each = [m.mrstft_distance(ref[c], est[c], SR) for c in range(2)]
    assert m.mrstft_distance(ref, est, SR) == pytest.approx(np.mean(mr_each), rel=1e-5)


def test_length_mismatch_is_trimmed_and_noted(speech: np.ndarray) -> None:
    est = np.concatenate([speech, np.ones(500, dtype=np.float32)])
    report = m.evaluate(speech, est, SR, speech=False)
    assert "length" in report.notes
    assert set(report.values) == {"si_sdr", "mel_distance", "mrstft", "bandwidth_ratio", "flatness_error"}
    assert report.values["mel_distance"] == pytest.approx(0.0, abs=1e-7)


def test_uncomputable_metrics_are_nan_with_reason(speech: np.ndarray) -> None:
    short = speech[:800]  # 50 ms: shorter than PESQ's 1/4 s, STOI's 30 frames and the 2048-point STFTs
    report = m.evaluate(short, short, SR)
    for name in ("mel_distance", "mrstft", "pesq_wb", "stoi"):
        assert np.isnan(report.values[name]) and report.notes[name], name
    assert "short" in report.notes["pesq_wb"].lower()
    with pytest.warns(m.MetricWarning, match="pesq_wb is NaN: NoUtterances"):
        assert np.isnan(m.pesq_wb(np.zeros_like(speech), speech, SR))


def test_periodicity_tells_voiced_from_noise_excited_speech(speech: np.ndarray) -> None:
    from rotcodec.eval.periodicity import frame_periodicity

    rng = np.random.default_rng(2)
    active = lambda p, e: p[e > e.max() - 40]  # noqa: E731
    assert active(*frame_periodicity(speech, SR)).mean() > 0.9  # a harmonic vowel
    assert frame_periodicity(rng.standard_normal(SR), SR)[0].max() < 0.35  # white noise
    # Same spectral envelope and loudness, harmonics replaced by noise: the failure this metric exists for.
    spec = np.fft.rfft(speech)
    whisper = np.fft.irfft(np.abs(spec) * np.exp(2j * np.pi * rng.random(spec.size)), n=speech.size)
    assert m.periodicity_error(speech, whisper, SR) > 0.5
    assert m.periodicity_error(speech, 0.1 * speech, SR) < 1e-6  # a level change keeps the voicing
    x24 = vowel(sr=24000, seconds=2.0, seed=5)  # other rates are resampled to 16 kHz first
    assert active(*frame_periodicity(x24, 24000)).mean() > 0.9
    with pytest.warns(m.MetricWarning, match="40 ms"):
        assert np.isnan(m.periodicity_error(speech[:300], speech[:300], SR))


def _harmonic(f0: np.ndarray, sr: int = SR) -> np.ndarray:
    """A flat-spectrum harmonic tone following the per-sample F0 track `f0` (Hz)."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    return sum(np.sin(k * phase) / k for k in range(1, 20)).astype(np.float32) * 0.2


def test_pitch_tracks_the_f0_and_pitch_error_counts_cents(speech: np.ndarray) -> None:
    from rotcodec.eval.periodicity import frame_pitch

    f0 = frame_pitch(speech, SR)
    centre = (np.arange(f0.size) * 160 + 320) / SR  # 40 ms frames, 10 ms hop
    truth = 120.0 + 20.0 * np.sin(2 * np.pi * 0.7 * centre)  # the vowel's glide
    voiced = ~np.isnan(f0)
    assert voiced.mean() > 0.9
    assert np.abs(1200 * np.log2(f0[voiced] / truth[voiced])).max() < 30
    assert np.isnan(frame_pitch(np.random.default_rng(0).standard_normal(SR), SR)).mean() > 0.9  # noise: unvoiced
    assert m.pitch_error(speech, 0.2 * speech, SR) < 1e-6
    # The failure this metric exists for: voiced output at a fixed pitch while the reference glides.
    t = np.arange(2 * SR) / SR
    glide = 110.0 * 2 ** (t / 2)  # one octave up over 2 s
    flat = np.full_like(t, 155.0)
    err = m.pitch_error(_harmonic(glide), _harmonic(flat), SR)
    expected = np.sqrt(np.mean((1200 * np.log2(155.0 / glide)) ** 2))
    assert err == pytest.approx(expected, rel=0.1)
    assert m.pitch_error(_harmonic(flat), _harmonic(2 * flat), SR) == pytest.approx(1200, rel=0.02)
    assert m.periodicity_error(_harmonic(glide), _harmonic(flat), SR) < 0.05  # blind to it
    with pytest.warns(m.MetricWarning, match="voiced in both"):
        assert np.isnan(m.pitch_error(speech, np.random.default_rng(1).standard_normal(speech.size), SR))


def test_pesq_and_stoi_resample_other_rates() -> None:
    x8 = vowel(sr=8000, seconds=3.0, seed=3)
    assert m.pesq_wb(x8, x8, 8000) > 4.5
    assert m.stoi(x8, x8, 8000) > 0.999


def test_bad_inputs_raise_value_errors() -> None:
    x = np.zeros((2, 3, 100))
    with pytest.raises(al.AudioInputError):
        m.si_sdr(x, x)
    with pytest.raises(ValueError, match="channel mismatch"):
        m.si_sdr(np.zeros((2, 100)), np.zeros((3, 100)))
    with pytest.raises(ValueError, match="NaN"):
        m.si_sdr(np.full(100, np.nan), np.zeros(100))
    with pytest.raises(ValueError, match="sample rate"):
        m.mel_distance(np.zeros(2000), np.zeros(2000), 0)


def test_dnsmos_is_optional(monkeypatch: pytest.MonkeyPatch, speech: np.ndarray) -> None:
    monkeypatch.setitem(sys.modules, "speechmos", None)  # makes the import fail
    assert m.dnsmos(speech, SR) is None
    report = m.evaluate(speech, speech, SR, speech=False, with_dnsmos=True)
    assert "speechmos" in report.notes["dnsmos"]


@settings(max_examples=25, deadline=None)
@given(delay=st.integers(-300, 300), seed=st.integers(0, 1000))
def test_estimate_delay_recovers_shift(delay: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    long = rng.standard_normal(4000)
    ref = long[400:3400]
    est = long[400 - delay : 3400 - delay] + 0.1 * rng.standard_normal(3000)  # est[n + d] = ref[n]
    assert al.estimate_delay(ref, est, max_lag=400) == delay
    assert al.estimate_delay(ref, -est, max_lag=400) == delay  # polarity does not matter
    assert al.estimate_delay(np.stack([ref, ref]), np.stack([est, 0.5 * est]), max_lag=400) == delay
    r, e = al.align(ref, est, delay)
    assert r.shape == e.shape and r.shape[-1] == 3000 - abs(delay)
    assert np.corrcoef(r, e)[0, 1] > 0.95
    back = al.compensate_delay(est, delay, ref.size)
    assert back.shape == ref.shape
    keep = slice(max(-delay, 0), ref.size - max(delay, 0))  # the rest is zero padding
    assert np.corrcoef(back[keep], ref[keep])[0, 1] > 0.95


def test_envelope_delay_on_shifted_speech(speech: np.ndarray) -> None:
    shifted = np.concatenate([np.zeros(250, dtype=np.float32), speech])[: speech.size]
    # phase-scrambled copy: the waveform no longer matches, the envelope still does
    scrambled = shifted * np.sign(np.sin(np.arange(speech.size) * 0.37))
    assert al.estimate_delay(speech, shifted, 600) == 250
    assert abs(al.estimate_delay(speech, scrambled, 600, method="envelope") - 250) <= 5


def test_align_rejects_no_overlap() -> None:
    with pytest.raises(al.AudioInputError):
        al.align(np.zeros(10), np.zeros(10), 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert al.compensate_delay(np.arange(5.0), -2, 6).tolist() == [0, 0, 0, 1, 2, 3]


# Music metrics (bandwidth_ratio, flatness_error) on 1 s of generated audio at 24 kHz.
SR24 = 24000


def _noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SR24)


def _shaped(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """`x` with its spectrum multiplied by `gain`, a function of the rfft bins' frequencies (Hz)."""
    return np.fft.irfft(np.fft.rfft(x) * gain, n=x.size)


def _freqs(n: int = SR24) -> np.ndarray:
    return np.fft.rfftfreq(n, 1 / SR24)


def _sines(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR24 * seconds)) / SR24
    return sum(np.sin(2 * np.pi * f * t + k) for k, f in enumerate((220, 330, 440, 660, 1234, 2500, 5000)))


def test_music_metric_names() -> None:
    assert m.MUSIC_METRICS == ("bandwidth_ratio", "flatness_error")
    assert m.metric_names(speech=False) == m.GENERAL_METRICS + m.MUSIC_METRICS
    assert m.metric_names(speech=True) == m.GENERAL_METRICS + m.SPEECH_METRICS
    assert m.HIGHER_IS_BETTER["bandwidth_ratio"] and not m.HIGHER_IS_BETTER["flatness_error"]
    x = _sines() + 0.01 * _noise()
    report = m.evaluate(x, x.copy(), SR24, speech=False)
    assert tuple(report.values) == m.metric_names(speech=False) and report.notes == {}
    assert report.values["bandwidth_ratio"] == 1.0
    assert report.values["flatness_error"] == pytest.approx(0.0, abs=1e-12)
    assert not set(m.MUSIC_METRICS) & set(m.evaluate(x, x, SR24, speech=True).values)


def test_bandwidth_ratio_of_a_low_passed_signal() -> None:
    noise = _noise()
    low6 = _shaped(noise, _freqs() <= 6000)
    assert 6000 <= m.effective_bandwidth_hz(low6, SR24) < 6200  # the edge, plus a few bins of smoothing
    assert m.effective_bandwidth_hz(noise, SR24) == SR24 / 2
    assert 0.45 < m.bandwidth_ratio(noise, low6, SR24) < 0.6
    assert m.bandwidth_ratio(noise, _shaped(noise, _freqs() <= 8000), SR24) == pytest.approx(8 / 12, abs=0.02)
    assert m.bandwidth_ratio(low6, noise, SR24) > 1.9  # content above the reference's band
    assert m.bandwidth_ratio(noise, np.zeros(SR24), SR24) == 0.0
    # A tone at 9961 Hz (on a bin) 55 dB below the noise's bins: within 60 dB in its own bin, but not once
    # spread by the 7-bin smoothing; 20 dB louder it counts.
    tone = np.sin(2 * np.pi * (850 * SR24 / 2048) * np.arange(SR24) / SR24)
    assert m.bandwidth_ratio(noise, low6 + 6.5e-5 * tone, SR24) < 0.52
    assert m.bandwidth_ratio(noise, low6 + 6.5e-4 * tone, SR24) == pytest.approx(9961 / 12000, abs=0.01)
    stereo = np.stack([noise, low6])  # spectra are averaged over channels: the wider channel sets the edge
    assert m.bandwidth_ratio(stereo, stereo, SR24) == 1.0
    assert m.bandwidth_ratio(stereo, np.stack([low6, low6]), SR24) < 0.6


def test_bandwidth_threshold_is_the_references_and_ignores_level() -> None:
    f = _freqs()
    # Flat to 1 kHz, then -20 dB per octave: 60 dB down near 8 kHz, so the edge depends on the threshold level.
    sloped = _shaped(_noise(3), np.where(f <= 1000, 1.0, 10.0 ** -np.log2(np.maximum(f, 1.0) / 1000)))
    edge = m.effective_bandwidth_hz(sloped, SR24)
    assert 7000 < edge < 8200
    # 20 dB quieter: scaled back to the reference's power before the common threshold, so the same edge (a
    # fixed threshold would put it near 4 kHz, where the reference is 40 dB down).
    assert m.effective_bandwidth_hz(0.1 * sloped, SR24, floor_of=sloped) == edge
    assert m.bandwidth_ratio(sloped, 0.1 * sloped, SR24) == pytest.approx(1.0, abs=0.01)
    # A loud hum (40 dB above the noise) raises the estimate's own maximum by over 60 dB above its noise bins;
    # the threshold stays the reference's, so the full band still counts.
    noise = _noise()
    hum = noise + 141.0 * np.sin(2 * np.pi * 100.0 * np.arange(SR24) / SR24)
    assert m.effective_bandwidth_hz(hum, SR24) < 300  # by its own maximum, only the hum is left
    assert m.bandwidth_ratio(noise, hum, SR24) == 1.0


def test_flatness_error_tells_tones_from_noise() -> None:
    sines = _sines()
    noise = _noise(4) * sines.std()  # same power
    assert m.flatness_error(sines, noise, SR24) > 40  # dB: tones at the -60 dB floor, noise near -2.5 dB
    assert m.flatness_error(sines, sines.copy(), SR24) < 0.01
    # A noise floor under the tones counts, more the louder it is.
    assert 5 < m.flatness_error(sines, sines + 0.01 * noise, SR24) < 30  # -40 dB
    assert m.flatness_error(sines, sines + 0.001 * noise, SR24) < 5  # -60 dB: at the floor
    assert m.flatness_error(sines, 0.1 * sines, SR24) < 1e-6  # a level change keeps the shape
    assert m.flatness_error(noise, noise + 0.1 * sines, SR24) < 0.5
    both = np.stack([sines, noise])
    each = [m.flatness_error(sines, noise, SR24), m.flatness_error(noise, noise, SR24)]
    assert m.flatness_error(both, np.stack([noise, noise]), SR24) == pytest.approx(np.mean(each))


def test_flatness_error_counts_only_active_frames() -> None:
    sines = _sines()
    quiet = 1e-4 * _noise(5)
    ref = np.concatenate([sines, quiet])  # then 1 s of near-silence (-80 dB): inactive
    # Loud noise where the reference is quiet, from one frame after its last active frame: not scored.
    est = np.concatenate([sines, quiet[:1024], 10 * sines.std() * _noise(6)[1024:]])
    assert m.flatness_error(ref, est, SR24) < 0.01
    est_loud = np.concatenate([sines.std() * _noise(6), sines])
    assert m.flatness_error(ref, est_loud, SR24) > 20


def test_music_metrics_nan_with_reason() -> None:
    noise = _noise()
    report = m.evaluate(np.zeros(SR24), noise, SR24, speech=False)
    for name in m.MUSIC_METRICS:
        assert np.isnan(report.values[name]) and "silent" in report.notes[name], name
    with pytest.warns(m.MetricWarning, match="bandwidth_ratio is NaN: needs at least 2048 samples"):
        assert np.isnan(m.bandwidth_ratio(noise[:2000], noise[:2000], SR24))
    with pytest.warns(m.MetricWarning, match="flatness_error is NaN: needs at least 1024 samples"):
        assert np.isnan(m.flatness_error(noise[:1000], noise[:1000], SR24))
    with pytest.warns(m.MetricWarning, match="channel 1"):
        assert np.isnan(m.flatness_error(np.stack([noise, np.zeros(SR24)]), np.stack([noise, noise]), SR24))
    with pytest.warns(m.MetricWarning, match="reference is silent"):
        assert np.isnan(m.effective_bandwidth_hz(noise, SR24, floor_of=np.zeros(SR24)))
    with pytest.warns(m.MetricWarning, match="reference is silent"):  # a constant, once its mean is removed
        assert np.isnan(m.bandwidth_ratio(np.full(SR24, 0.5), noise, SR24))


def test_music_columns_reach_the_summary_table() -> None:
    from rotcodec.eval.report import columns_for, summary_markdown

    x = _sines() + 0.01 * _noise()
    low = _shaped(x, _freqs() <= 6000)
    rows = [
        {"file": f, "codec": "c", "setting": "6", "nominal_kbps": 6.0, **m.compute_all(x, est, SR24, speech=False)}
        for f, est in (("a.wav", low), ("b.wav", x))
    ]
    assert columns_for(rows)[-2:] == list(m.MUSIC_METRICS)
    header = summary_markdown(rows).splitlines()[6]
    assert header.endswith("| mrstft ↓ | bandwidth_ratio ↑ | flatness_error ↓ |"), header
