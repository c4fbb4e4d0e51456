"""Tests for rotcodec.data: generated audio, manifests/splits, crop datasets and DataLoaders."""

from __future__ import annotations

import csv
import itertools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.audio import load_audio, save_audio
from rotcodec.cli.main import main as cli_main
from rotcodec.data import (
    KINDS,
    DataConfig,
    DataError,
    ManifestError,
    UnreadableAudioWarning,
    build_datasets,
    build_loaders,
    find_audio,
    forever,
    prepare_manifest,
    read_manifest,
    set_epoch,
    synth_clip,
    write_synthetic_corpus,
)
from rotcodec.data.manifest import split_of

SR = 16000
# Tiny corpora often leave a split empty; that warning has its own test below.
pytestmark = pytest.mark.filterwarnings("ignore:no files landed")


@pytest.fixture
def corpus(tmp_path):
    """8 one-second generated files in spk0..spk3 folders."""
    write_synthetic_corpus(tmp_path / "corpus", 8, 1.0, SR, seed=3)
    return tmp_path / "corpus"


# ---------------------------------------------------------------- synth


@pytest.mark.parametrize("kind", KINDS)
def test_synth_clip_is_deterministic_and_well_formed(kind):
    a = synth_clip(kind, 0.5, SR, seed=1)
    assert a.shape == (1, 8000) and a.dtype == np.float32
    assert np.all(np.isfinite(a)) and abs(np.max(np.abs(a)) - 0.5) < 1e-6
    np.testing.assert_array_equal(a, synth_clip(kind, 0.5, SR, seed=1))
    assert not np.array_equal(a, synth_clip(kind, 0.5, SR, seed=2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synth_kinds_have_their_spectral_character(seed):
    def power(kind):
        p = np.abs(np.fft.rfft(synth_clip(kind, 1.0, SR, seed)[0])) ** 2
        return p / p.sum(), np.fft.rfftfreq(SR, 1 / SR)

    p, f = power("chirp")  # a sweep puts energy in every octave from 125 Hz to 8 kHz
    assert min(p[(f >= lo) & (f < 2 * lo)].sum() for lo in (125, 250, 500, 1000, 2000, 4000)) > 0.005
    p, f = power("tone")  # harmonic partials: energy concentrated in few bins
    assert np.sort(p)[::-1][: len(p) // 100].sum() > 0.5
    p, f = power("speech")  # voiced formant speech: mostly below 1 kHz, little above 4 kHz
    assert p[f < 1000].sum() > 0.6 and p[f > 4000].sum() < 0.1
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        synth_clip("opera", 1.0, SR)


def test_write_synthetic_corpus(tmp_path):
    paths = write_synthetic_corpus(tmp_path, 5, 0.25, 8000, seed=0)
    assert len(paths) == 5 and len({p.parent.name for p in paths}) == 4
    wav, sr = load_audio(paths[0])
    assert sr == 8000 and wav.shape == (1, 2000)


# ---------------------------------------------------------------- manifests


def _splits(path):
    return {e.path: (e.split, e.speaker) for e in read_manifest(path)}


def test_find_audio_folders_globs_and_missing(corpus):
    assert len(find_audio([corpus])) == 8
    assert len(find_audio([str(corpus / "spk1" / "*.wav")])) == 2
    assert len(find_audio([str(corpus / "**" / "*.wav")])) == 8
    with pytest.raises(ManifestError, match="no such file"):
        find_audio([corpus / "nope"])
    with pytest.raises(ManifestError, match="matched no audio"):
        find_audio([str(corpus / "*.mp3")])


@pytest.mark.parametrize("suffix", ["tsv", "csv", "jsonl"])
def test_prepare_writes_readable_manifest(corpus, tmp_path, suffix):
    out = tmp_path / f"m.{suffix}"
    report = prepare_manifest([corpus], out, valid_fraction=0.3, test_fraction=0.3, split_by="file")
    entries = read_manifest(out)
    assert len(entries) == 8 and sum(report.files.values()) == 8
    assert all(e.duration == pytest.approx(1.0) and e.sample_rate == SR and e.channels == 1 for e in entries)
    assert {e.speaker for e in entries} == {"spk0", "spk1", "spk2", "spk3"}
    assert all(e.split in ("train", "valid", "test") for e in entries)
    with pytest.raises(ManifestError, match="already exists"):
        prepare_manifest([corpus], out)
    # a manifest is itself a valid source, and listed paths resolve to the same files
    assert sorted(e.path for e in find_audio([out])) == sorted(str(p) for p in corpus.rglob("*.wav"))


def test_splits_are_deterministic_and_stable_when_files_are_added(corpus, tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    prepare_manifest([corpus], a, 0.3, 0.3, split_by="file", seed=5)
    prepare_manifest([corpus], b, 0.3, 0.3, split_by="file", seed=5)
    assert a.read_text() == b.read_text()
    write_synthetic_corpus(tmp_path / "more", 6, 0.2, SR, seed=9)
    for p in (tmp_path / "more").rglob("*.wav"):  # new files inside the same source folder
        p.rename(corpus / p.parent.name / f"new_{p.name}")
    c = tmp_path / "c.tsv"
    prepare_manifest([corpus], c, 0.3, 0.3, split_by="file", seed=5)
    old, new = _splits(a), _splits(c)
    assert len(new) == 14 and all(new[k] == v for k, v in old.items())


def test_speaker_split_and_hold_out(corpus, tmp_path):
    out = tmp_path / "m.tsv"
    with pytest.warns(UserWarning, match="not found in the data: ghost"):
        report = prepare_manifest([corpus], out, 0.4, 0.2, hold_out_speakers=["spk2", "ghost"])
    by_speaker: dict[str, set[str]] = {}
    for split, speaker in _splits(out).values():
        by_speaker.setdefault(speaker, set()).add(split)
    assert all(len(s) == 1 for s in by_speaker.values())  # no speaker in two splits
    assert by_speaker["spk2"] == {"test"}
    assert report.speakers["test"] >= 1


@pytest.mark.filterwarnings("default")
def test_empty_split_is_reported(corpus, tmp_path):
    with pytest.warns(UserWarning, match="no files landed in valid"):
        report = prepare_manifest([corpus], tmp_path / "m.tsv", valid_fraction=1e-9, test_fraction=0.0)
    assert report.files == {"train": 8}


def test_speaker_regex(tmp_path):
    for name in ("alice_1", "alice_2", "bob_1"):
        save_audio(tmp_path / f"{name}.wav", synth_clip("tone", 0.1, SR), SR)
    out = tmp_path / "m.csv"
    prepare_manifest([tmp_path], out, 0.0, 0.0, speaker_regex=r"/([a-z]+)_\d+\.wav$")
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["speaker"] for r in rows) == ["alice", "alice", "bob"]


def test_prepare_skips_and_counts_unreadable(corpus, tmp_path):
    (corpus / "spk0" / "broken.wav").write_text("not audio")
    with pytest.warns(UnreadableAudioWarning, match="broken.wav"):
        report = prepare_manifest([corpus], tmp_path / "m.tsv", 0.1, 0.1)
    assert len(report.skipped) == 1 and sum(report.files.values()) == 8


def test_prepare_cli(corpus, tmp_path, capsys):
    out = tmp_path / "m.tsv"
    assert cli_main(["prepare", str(corpus), "-o", str(out), "--hold-out-speakers", "spk1,spk3"]) == 0
    assert {s for s, spk in _splits(out).values() if spk in ("spk1", "spk3")} == {"test"}
    assert "wrote" in capsys.readouterr().out
    assert cli_main(["prepare", str(tmp_path / "missing"), "-o", str(tmp_path / "x.tsv")]) == 1
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x.tsv").exists()


@settings(max_examples=50, deadline=None)
@given(key=st.text(min_size=1, max_size=30), f1=st.floats(0, 0.45), f2=st.floats(0, 0.45), seed=st.integers(0, 99))
def test_growing_valid_fraction_only_moves_train_to_valid(key, f1, f2, seed):
    lo, hi = sorted((f1, f2))
    a, b = split_of(key, lo, 0.0, seed), split_of(key, hi, 0.0, seed)
    assert a in ("train", "valid") and b in ("train", "valid")
    assert not (a == "valid" and b == "train")


# ---------------------------------------------------------------- datasets


def _cfg(sources, **kw) -> DataConfig:
    base = dict(
        sources=[str(s) for s in sources],
        sample_rate=SR,
        segment_seconds=0.25,
        items_per_epoch=12,
        valid_items=4,
        num_workers=0,
        valid_fraction=0.25,
        seed=1,
    )
    base.update(kw)
    return DataConfig(**base)


@pytest.mark.parametrize("cache_mb", [1024.0, 0.0])
def test_crops_shape_dtype_resampled_and_stereo(corpus, cache_mb):
    train, valid = build_datasets(_cfg([corpus], sample_rate=24000, channels=2, cache_mb=cache_mb))
    assert (train.cache is None) == (cache_mb == 0.0)
    for ds in (train, valid):
        x = ds[0]
        assert x.shape == (2, 6000) and x.dtype == torch.float32 and torch.isfinite(x).all()
        torch.testing.assert_close(x[0], x[1])  # mono files duplicated into both channels
    assert not {e.path for e in train.entries} & {e.path for e in valid.entries}


@pytest.mark.parametrize("rate", [24000, 22050, 8000])
def test_lazy_partial_reads_match_whole_file_decoding(corpus, rate):
    cached, _ = build_datasets(_cfg([corpus], sample_rate=rate, items_per_epoch=30, loudness_db=None))
    lazy, _ = build_datasets(_cfg([corpus], sample_rate=rate, items_per_epoch=30, loudness_db=None, cache_mb=0.0))
    assert cached.cache is not None and lazy.cache is None
    for i in range(len(cached)):
        # a resampled window must line up sample-exactly with the whole-file resample
        assert torch.max(torch.abs(cached[i] - lazy[i])) < 1e-4


@pytest.mark.filterwarnings("ignore:no validation files")
def test_loudness_target_and_silence(tmp_path):
    save_audio(tmp_path / "loud.wav", synth_clip("tone", 1.0, SR, 0) * 0.1, SR)
    save_audio(tmp_path / "silent.wav", np.zeros((1, SR), np.float32), SR)
    train, _ = build_datasets(_cfg([tmp_path], gain_jitter_db=0.0, valid_fraction=0.0, items_per_epoch=40))
    levels = []
    for i in range(len(train)):
        x = train[i].numpy()
        assert np.all(np.isfinite(x))
        rms = np.sqrt(np.mean(x**2))
        if rms == 0:
            continue  # silent crop stays silent, no NaN from dividing by its RMS
        levels.append(20 * np.log10(rms))
        assert np.max(np.abs(x)) <= 0.99 + 1e-6
    assert len(levels) < len(train)  # both files were drawn
    assert all(abs(db + 23.0) < 0.1 or db < -23.0 for db in levels)  # at target unless peak-limited
    assert any(abs(db + 23.0) < 0.1 for db in levels)


@pytest.mark.filterwarnings("ignore:no validation files")
def test_short_files_are_padded(tmp_path):
    save_audio(tmp_path / "short.wav", synth_clip("noise", 0.05, SR, 0), SR)
    train, _ = build_datasets(_cfg([tmp_path], valid_fraction=0.0, loudness_db=None))
    x = train[0]
    assert x.shape == (1, 4000)
    assert torch.count_nonzero(x[:, 800:]) == 0 and torch.count_nonzero(x[:, :800]) > 0


@pytest.mark.filterwarnings("ignore:no validation files")
def test_unreadable_file_is_skipped_and_counted(corpus):
    (corpus / "spk3" / "zzz_broken.flac").write_bytes(b"\x00" * 64)
    with pytest.warns(UnreadableAudioWarning, match="zzz_broken"):
        train, _ = build_datasets(_cfg([corpus], valid_fraction=0.0))
    assert len(train.skipped) == 1 and "zzz_broken" in train.skipped[0][0]
    assert len(train.entries) == 8
    assert all(torch.isfinite(train[i]).all() for i in range(3))


def test_file_broken_after_probing_is_skipped_mid_run(corpus):
    train, valid = build_datasets(_cfg([corpus], cache_mb=0.0, items_per_epoch=20))
    victim = train.entries[0].path
    with open(victim, "r+b") as fh:  # keep the header, turn the samples into an unreadable tail
        fh.truncate(20)
    with pytest.warns(UnreadableAudioWarning, match="skipping unreadable"):
        items = [train[i] for i in range(len(train))]
    assert all(x.shape == (1, 4000) and torch.isfinite(x).all() for x in items)
    assert [p for p, _ in train.skipped] == [victim]


def test_empty_dataset_errors(tmp_path):
    with pytest.raises(DataError, match="no data sources"):
        build_datasets(DataConfig(sources=[]))
    (tmp_path / "bad.wav").write_text("nope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableAudioWarning)
        with pytest.raises(DataError, match=r"no readable audio files .*\(1 file\(s\) skipped\)"):
            build_datasets(_cfg([tmp_path]))


def test_crops_are_reproducible_per_seed_epoch_index(corpus):
    a, va = build_datasets(_cfg([corpus]))
    b, vb = build_datasets(_cfg([corpus]))
    torch.testing.assert_close(a[3], b[3])
    torch.testing.assert_close(va[1], vb[1])
    b.set_epoch(1)
    assert not torch.equal(a[3], b[3])
    c, _ = build_datasets(_cfg([corpus], seed=2))
    assert not torch.equal(a[3], c[3])


def test_manifest_splits_are_used(corpus, tmp_path):
    out = tmp_path / "m.tsv"
    prepare_manifest([corpus], out, 0.0, 0.0)
    rows = out.read_text().splitlines()
    rows = [rows[0]] + [r.replace("\ttrain\t", "\tvalid\t") if i % 4 == 0 else r for i, r in enumerate(rows[1:])]
    out.write_text("\n".join(rows) + "\n")
    train, valid = build_datasets(_cfg([out]))
    assert len(valid.entries) == 2 and len(train.entries) == 6


def test_synthetic_config():
    train, valid = build_datasets(
        DataConfig(
            synthetic=True,
            synthetic_files=4,
            synthetic_seconds=0.5,
            segment_seconds=0.2,
            items_per_epoch=3,
            valid_items=2,
        )
    )
    assert train[0].shape == (1, 3200) and valid[1].shape == (1, 3200)


def test_dataloader_two_workers_matches_single_process(corpus):
    train, valid = build_loaders(_cfg([corpus], num_workers=2), batch_size=4)
    ref, _ = build_loaders(_cfg([corpus], num_workers=0), batch_size=4)
    batches = list(train)
    assert len(batches) == 3 and batches[0].shape == (4, 1, 4000) and batches[0].dtype == torch.float32
    for x, y in zip(batches, ref, strict=True):
        torch.testing.assert_close(x, y)
    assert next(iter(valid)).shape == (4, 1, 4000)
    set_epoch(train, 1)
    assert not torch.equal(next(iter(train)), batches[0])
    stream = list(itertools.islice(forever(ref), 5))  # crosses into the second epoch
    assert not torch.equal(stream[3], stream[0])


def test_distributed_ranks_get_different_crops(corpus):
    r0, _ = build_loaders(_cfg([corpus]), batch_size=2, distributed=True, rank=0, world_size=2)
    r1, _ = build_loaders(_cfg([corpus]), batch_size=2, distributed=True, rank=1, world_size=2)
    b0, b1 = list(r0), list(r1)
    assert len(b0) == len(b1) == 3
    assert not any(torch.equal(x, y) for x, y in zip(b0, b1, strict=True))
    with pytest.raises(DataError, match="distributed"):
        build_loaders(_cfg([corpus]), batch_size=2, distributed=True)


def test_initialised_process_group_switches_to_distributed_sampler(corpus, tmp_path):
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed not built")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        train, valid = build_loaders(_cfg([corpus]), batch_size=4)
        assert isinstance(train.sampler, torch.utils.data.DistributedSampler)
        assert isinstance(valid.sampler, torch.utils.data.DistributedSampler)
        assert len(list(train)) == 3
    finally:
        dist.destroy_process_group()
