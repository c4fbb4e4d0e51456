"""Speech or music: the features, the fitted rule `compress` uses without --model, and `rotcodec detect`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rotcodec.cli.main import main
from rotcodec.data.synth import synth_clip
from rotcodec.inference.content import (
    FEATURES,
    ContentClassifier,
    ContentUncertain,
    features,
    fit,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _read(name: str) -> tuple[np.ndarray, int]:
    x, sr = sf.read(SAMPLES / name, dtype="float32", always_2d=True)
    return x.T, sr


def test_features_have_one_value_each_and_nan_for_nothing_to_judge():
    x, sr = _read("arctic_a0007_16k.wav")
    f = features(x, sr)
    assert f.shape == (len(FEATURES),) and np.all(np.isfinite(f))
    assert np.all(np.isnan(features(np.zeros((1, sr * 3)), sr)))  # silence
    assert np.all(np.isnan(features(x[:, : sr // 20], sr)))  # 50 ms
    # The rate and channel count of the same audio barely move them: the rule sees the content.
    stereo = features(np.repeat(x, 2, axis=0), sr)
    np.testing.assert_allclose(stereo, f, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["arctic_a0007_16k.wav", "librivox_16k.wav"])
def test_bundled_rule_reads_committed_speech_as_speech(name):
    x, sr = _read(name)
    kind, p = ContentClassifier.load().classify(x, sr)
    assert kind == "speech" and p < 0.3


def test_bundled_rule_reads_committed_music_as_music():
    x, sr = _read("bwv66.6_strings_24k.wav")
    kind, p = ContentClassifier.load().classify(x, sr)
    assert kind == "music" and p > 0.5


def test_undecided_and_silent_clips_raise():
    rule = ContentClassifier.load()
    with pytest.raises(ContentUncertain, match="silent"):
        rule.classify(np.zeros((1, 48000)), 16000)
    x, sr = _read("librivox_16k.wav")
    p = rule.p_music(features(x, sr))
    between = ContentClassifier(**{**rule.__dict__, "speech_below": p - 0.01, "music_above": p + 0.01})
    with pytest.raises(ContentUncertain, match="cannot tell"):
        between.classify(x, sr)


def test_fit_separates_two_classes_and_round_trips_through_json(tmp_path):
    rng = np.random.default_rng(0)
    speech = rng.normal(0.0, 1.0, (200, len(FEATURES)))
    music = rng.normal(0.0, 1.0, (200, len(FEATURES)))
    music[:, 3] += 3.0  # one feature tells them apart
    speech[5, 0] = np.nan  # dropped, not propagated
    rule = fit(speech, music)
    assert np.argmax(np.abs(rule.weights)) == 3 and rule.weights[3] > 0
    p_speech = np.array([rule.p_music(f) for f in speech[6:]])
    p_music = np.array([rule.p_music(f) for f in music])
    assert np.mean(p_speech < 0.5) > 0.9 and np.mean(p_music > 0.5) > 0.9
    path = tmp_path / "rule.json"
    path.write_text(rule.to_json())
    again = ContentClassifier.load(path)
    assert again.p_music(music[0]) == pytest.approx(rule.p_music(music[0]))
    data = json.loads(path.read_text())
    data["features"] = data["features"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="refit"):
        ContentClassifier.load(path)


def test_detect_cli_names_the_model_and_fit_writes_a_rule(tmp_path, capsys):
    assert main(["detect", str(SAMPLES / "arctic_a0007_16k.wav"), str(SAMPLES / "bwv66.6_strings_24k.wav")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("-> speech16k") and out[1].endswith("-> music24k")
    assert main(["detect", str(tmp_path / "missing.wav")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    speech, music = tmp_path / "speech", tmp_path / "music"
    for folder, kind in ((speech, "speech"), (music, "tone")):
        folder.mkdir()
        for seed in range(3):
            sf.write(folder / f"{seed}.wav", synth_clip(kind, 3.0, 16000, seed)[0], 16000)
    (music / "junk.wav").write_bytes(b"not audio")  # skipped with a one-line note, not a traceback
    out_json = tmp_path / "rule.json"
    args = ["detect", "--fit", "--speech", str(speech), "--music", str(music), "--clips", "12", "-o", str(out_json)]
    capsys.readouterr()
    assert main(args) == 0
    assert "skipped 1 unreadable file(s)" in capsys.readouterr().out
    assert ContentClassifier.load(out_json).trained_on.startswith("12 crops")
    assert main(args) == 2  # exists: needs --force
    assert main(["detect", "--fit", "--speech", str(speech), "-o", str(out_json)]) == 2


def test_compress_picks_the_model_by_content_and_info_names_it(tmp_path, capsys):
    music, speech = tmp_path / "music.wav", tmp_path / "speech.wav"
    x, sr = _read("bwv66.6_strings_24k.wav")
    sf.write(music, np.stack([x[0], 0.5 * x[0]], axis=1), sr)  # stereo
    y, speech_sr = _read("arctic_a0007_16k.wav")
    sf.write(speech, y[0], speech_sr)
    assert main(["compress", str(music), str(speech), "-o", str(tmp_path / "out"), "--kbps", "12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "2 ch, music24k," in lines[0] and "1 ch, speech16k," in lines[1]
    assert main(["info", "--json", str(tmp_path / "out" / "music.rcq")]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == "music24k"
    assert main(["decompress", str(tmp_path / "out" / "music.rcq"), "-o", str(tmp_path / "back.wav")]) == 0
    back, back_sr = sf.read(tmp_path / "back.wav", always_2d=True)
    assert back_sr == sr and back.shape == (x.shape[1], 2)
    # --model overrides the rule.
    assert main(["compress", str(music), "-o", str(tmp_path / "as_speech.rcq"), "--model", "speech16k"]) == 0
    assert "speech16k" in capsys.readouterr().out


def test_compress_asks_for_a_model_when_the_rule_cannot_tell(tmp_path, capsys, monkeypatch):
    rule = ContentClassifier.load()
    undecided = ContentClassifier(**{**rule.__dict__, "speech_below": 0.0, "music_above": 1.0})
    monkeypatch.setattr(ContentClassifier, "load", classmethod(lambda cls, path=None: undecided))
    src = SAMPLES / "librivox_16k.wav"
    assert main(["compress", str(src), "-o", str(tmp_path / "x.rcq")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot tell speech from music" in err[0] and "--model speech16k" in err[0]
    assert not list(tmp_path.iterdir())
