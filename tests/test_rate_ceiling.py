"""`--kbps` is a ceiling that is spent: for files of 10 s or more the whole `.rcq` (header and chunk records
included) stays within the requested rate and close under it, whatever the signal, its length, sample rate
and channel count. Checked with the shipped model, its real tables and its real planner, on generated
speech-like and music-like audio."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import vowel
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rotcodec.inference import load_model, read_rcq_header
from rotcodec.inference.model import PROBE_MARGIN, PROBE_SECONDS, probe_audio, probe_spans

pytestmark = pytest.mark.usefixtures("one_thread")


def music(sr: int, seconds: float, seed: int) -> np.ndarray:
    """Music-like: a chord progression of plucked harmonic notes (bright, decaying), a bass line and a
    noise hi-hat on the beat; float32 `[time]`, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = np.zeros_like(t)
    beat = 0.25 + 0.25 * rng.random()
    for start in np.arange(0.0, seconds, beat):
        idx = t >= start
        tau = t[idx] - start
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        for ratio in (1.0, 1.25, 1.5, 2.0):
            for k in range(1, 12):
                f = root * ratio * k
                if f < sr / 2:
                    x[idx] += np.sin(2 * np.pi * f * tau) * np.exp(-3 * tau - 0.3 * k) / k
        x[idx] += 0.3 * rng.standard_normal(idx.sum()) * np.exp(-40 * tau)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return load_model("speech16k")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# its probe prices it 2.2% under the whole file's cost, past PROBE_MARGIN: its first stream lands over
@example(kind="music", seconds=21.0, sr=44100, channels=1, kbps=3.0, seed=1)
@given(
    kind=st.sampled_from(["speech", "music"]),
    seconds=st.sampled_from([10.0, 13.0, 21.0]),
    sr=st.sampled_from([16000, 44100]),
    channels=st.sampled_from([1, 2]),
    kbps=st.sampled_from([1.5, 3.0, 6.0, 12.0]),
    seed=st.integers(0, 1000),
)
def test_whole_file_rate_is_at_most_the_request(model, kind, seconds, sr, channels, kbps, seed) -> None:  # noqa: ANN001
    make = vowel if kind == "speech" else music
    wav = np.stack([make(sr, seconds, seed + c) for c in range(channels)])
    lowest = min(model.bitrate(layout, channels) for layout in model.layouts())
    data = model.compress(wav, sr, kbps=kbps)
    measured = len(data) * 8 / seconds / 1000
    header = read_rcq_header(data)
    assert header.channels == channels
    if lowest * 1.05 < kbps:  # a request below the smallest layout cannot be met: compress warns instead
        assert measured <= kbps, f"{kind} {seconds} s {sr} Hz x{channels}: {measured:.3f} > {kbps} kbps"
        # and it is spent: a trimmed last stage fills what whole stages leave (without it, up to 17% was left).
        # Not to 5% here: generated music, whose band gains cost the most, can land up to 8% under (a stage's
        # worth of gains is coarse beside its rate). Further under only
        # where no trimmed size that brings the latent closer (FileCosts.helps) fits beside the plan.
        if measured < 0.92 * kbps:
            probe = probe_audio(wav, sr)
            costs = model.row_costs(probe, sr)
            layout, _ = model.plan_file(probe, sr, seconds, kbps=kbps)
            assert layout.last_codes is None and layout.n_q < model.n_q, f"{layout}: {measured:.3f} << {kbps} kbps"
            for j, k in enumerate(costs.sizes):
                more = model.codec.layout(layout.n_q + 1, layout.envelope, k)
                planned = model.bitrate(more, channels, costs=costs) * PROBE_MARGIN
                fits = planned + model.overhead_kbps(more, channels, max(seconds, PROBE_SECONDS)) <= kbps
                assert not (fits and costs.helps[layout.n_q, j]), f"{kind} x{channels}: {k} codes fit and help"


def test_a_quiet_opening_does_not_price_the_whole_file() -> None:
    """The plan is priced on pieces spread over the whole file, not on its opening: a recording that opens with
    10 s of near-silence (cheap to code) and then speaks stays within the request (priced on its opening it
    came out at 1.8x the request at 1.5 kbps), and one that opens with a steady hum still spends most of it."""
    model = load_model("speech16k")
    sr, rng = 16000, np.random.default_rng(0)
    quiet = 0.003 * rng.standard_normal(10 * sr)
    hum = 0.1 * np.sin(2 * np.pi * 100 * np.arange(10 * sr) / sr)
    for opening in (quiet, hum):
        wav = np.concatenate([opening, vowel(sr, 20.0, seed=3)]).astype(np.float32)
        for kbps in (1.5, 6.0):
            measured = len(model.compress(wav, sr, kbps=kbps)) * 8 / 30.0 / 1000
            assert 0.7 * kbps <= measured <= kbps, (kbps, measured)


def test_compress_prints_the_plans_own_rate_and_says_when_a_short_file_exceeds(tmp_path, capsys) -> None:  # noqa: ANN001
    """The "planned" figure is what the plan expected for this file (its measured costs, header included),
    so it lands near the measured rate; a short file over the request says so."""
    import re

    import soundfile as sf

    from rotcodec.cli.main import main

    sf.write(tmp_path / "long.wav", vowel(16000, 12.0, seed=3), 16000)
    sf.write(tmp_path / "short.wav", vowel(16000, 1.0, seed=4), 16000)
    assert main(["compress", str(tmp_path / "long.wav"), "--kbps", "3"]) == 0
    out = capsys.readouterr().out
    planned, measured = map(float, re.search(r"planned ([\d.]+) kbps, measured ([\d.]+) kbps", out).groups())
    assert measured <= 3.0 and abs(planned - measured) < 0.05 * measured, out
    assert main(["compress", str(tmp_path / "short.wav"), "--kbps", "3"]) == 0
    out = capsys.readouterr().out
    measured = float(re.search(r"measured ([\d.]+) kbps", out).group(1))
    assert measured > 3.0 and "warning: more than the 3 kbps asked" in out, out  # 1 s: the header alone is 0.3


@pytest.mark.parametrize("seconds", [3.0, 10.0, 10.5, 61.0, 3600.0])
def test_the_probe_is_ten_seconds_spread_from_start_to_end(seconds: float) -> None:
    sr = 16000
    length = int(seconds * sr)
    spans = probe_spans(length, sr)
    assert sum(n for _, n in spans) == min(length, int(PROBE_SECONDS * sr))
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == length
    assert all(a + n <= b for (a, n), (b, _) in zip(spans, spans[1:], strict=False))  # in order, no overlap


def first_and_replanned(model, wav: np.ndarray, sr: int, kbps: float) -> tuple[bytes, bytes]:  # noqa: ANN001
    """The stream `compress` writes with `CodecModel.replan` switched off (its first plan), and the one it keeps."""
    replan = type(model).replan
    try:
        type(model).replan = lambda *args, **kwargs: None
        first = model.compress(wav, sr, kbps=kbps)
    finally:
        type(model).replan = replan
    return first, model.compress(wav, sr, kbps=kbps)


def test_a_file_its_probe_priced_too_dear_is_planned_again_within_the_request() -> None:
    """Speech exactly where the probe listens, near-silence between: the probe prices the file far dearer
    than it costs, the first stream lands well under --kbps, and compress plans and codes it once more with
    the probe's prices scaled by what the stream measured (`CodecModel.replan`), keeping its band gains,
    closer to the request and never over it."""
    model = load_model("speech16k")
    sr, seconds, kbps = 16000, 30.0, 3.0
    wav = 0.002 * np.random.default_rng(1).standard_normal(int(sr * seconds))
    for start, count in probe_spans(len(wav), sr):
        wav[start : start + count] = vowel(sr, count / sr, seed=start)
    wav = wav.astype(np.float32)
    first, second = first_and_replanned(model, wav, sr, kbps)
    rate = [len(d) * 8 / seconds / 1000 for d in (first, second)]
    assert rate[0] < 0.95 * kbps, rate  # the probe's overpricing is what this test is about
    assert rate[0] < rate[1] <= kbps, rate
    layouts = [model.layout_of(read_rcq_header(d)) for d in (first, second)]
    assert layouts[1].envelope == layouts[0].envelope and layouts[1].n_q >= layouts[0].n_q, layouts


def test_a_file_its_probe_priced_too_cheap_is_planned_again_under_the_request() -> None:
    """The mirror case: near-silence exactly where the probe listens, speech between. The probe prices the file
    far cheaper than it costs and the first stream lands well over --kbps; compress plans and codes it again at
    dearer prices, any band-gain tier allowed, and the file it keeps is under the request."""
    model = load_model("speech16k")
    sr, seconds = 16000, 30.0
    wav = vowel(sr, seconds, seed=5).copy()
    for start, count in probe_spans(len(wav), sr):
        wav[start : start + count] = 0.002 * np.random.default_rng(start).standard_normal(count)
    for kbps in (1.5, 6.0):
        first, second = first_and_replanned(model, wav, sr, kbps)
        rate = [len(d) * 8 / seconds / 1000 for d in (first, second)]
        assert rate[0] > 1.15 * kbps, rate  # the probe's underpricing is what this test is about
        assert 0.6 * kbps < rate[1] <= kbps, rate


def test_compress_warns_when_a_long_file_stays_over(tmp_path, capsys, monkeypatch) -> None:  # noqa: ANN001
    """Where no second plan lands under the request (here: replanning switched off on the file above), the
    CLI says the file is over --kbps and why, instead of blaming a short file's header."""
    import re

    import soundfile as sf

    from rotcodec.cli.main import main
    from rotcodec.inference.model import CodecModel

    sr = 16000
    wav = vowel(sr, 30.0, seed=5).copy()
    for start, count in probe_spans(len(wav), sr):
        wav[start : start + count] = 0.002 * np.random.default_rng(start).standard_normal(count)
    sf.write(tmp_path / "a.wav", wav, sr)
    monkeypatch.setattr(CodecModel, "replan", lambda *args, **kwargs: None)
    assert main(["compress", str(tmp_path / "a.wav"), "--kbps", "1.5", "--model", "speech16k"]) == 0
    out = capsys.readouterr().out
    assert float(re.search(r"measured ([\d.]+) kbps", out).group(1)) > 1.5, out
    assert "warning: more than the 1.5 kbps asked: replanning did not bring it under" in out, out
