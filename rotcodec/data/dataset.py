"""Training/validation datasets of random audio crops and their DataLoaders.

Items are float32 tensors [channels, segment_samples] at the model's sample rate (Hz). Training is
step-based, so the train dataset is an "epoch" of `items_per_epoch` random crops whose randomness comes only
from (seed, epoch, index): the same run always sees the same crops, whatever the worker count. Validation
crops are fixed. Small corpora are decoded and resampled once into memory; large ones are read lazily with
soundfile partial reads.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from rotcodec.audio import AudioError, load_audio, resample, to_channels
from rotcodec.data.manifest import Entry, UnreadableAudioWarning, find_audio, hash_unit, probe
from rotcodec.data.synth import KINDS, synth_clip

SILENCE_RMS = 1e-5  # -100 dBFS: below this a crop is left as is instead of amplified
PEAK_LIMIT = 0.99  # loudness gain never pushes peaks past this


class DataError(ValueError):
    """A dataset that cannot be built (no sources, nothing readable, bad settings)."""


@dataclass
class DataConfig:
    """Where audio comes from and how crops are made.

    sources: folders, globs, audio files or manifests; manifest `split` columns (train/valid) are used when
    every entry has one, otherwise files are split by hashing their names with `valid_fraction`.
    """

    sources: list[str] = field(default_factory=list)
    sample_rate: int = 16_000  # Hz, the model's rate
    channels: int = 1
    segment_seconds: float = 1.0
    valid_fraction: float = 0.05
    loudness_db: float | None = -23.0  # target crop RMS in dBFS; None keeps the file's level
    gain_jitter_db: float = 3.0  # uniform +-jitter on the training target
    items_per_epoch: int = 10_000
    valid_items: int = 256
    num_workers: int = 2
    seed: int = 0
    synthetic: bool = False  # generate audio (rotcodec.data.synth) instead of reading sources
    synthetic_files: int = 16
    synthetic_seconds: float = 4.0
    cache_mb: float = 1024.0  # decode everything into RAM when it fits in this many MiB


def normalize_loudness(
    x: np.ndarray, target_db: float | None, jitter_db: float, rng: np.random.Generator
) -> np.ndarray:
    """Scale [channels, time] audio to an RMS of target_db (+- jitter) dBFS; silence is left untouched."""
    if target_db is None:
        return x
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if not rms > SILENCE_RMS:
        return x
    gain_db = target_db - 20 * math.log10(rms) + (rng.uniform(-jitter_db, jitter_db) if jitter_db > 0 else 0.0)
    x = x * np.float32(10 ** (gain_db / 20))
    peak = float(np.max(np.abs(x)))
    return x * np.float32(PEAK_LIMIT / peak) if peak > PEAK_LIMIT else x


class CropDataset(Dataset):
    """Random (train) or fixed (valid) crops from a list of probed entries.

    Args:
        entries: readable files with duration/sample_rate/channels filled in (see manifest.probe).
        cfg: DataConfig.
        train: random crops with gain jitter (len = items_per_epoch) vs fixed crops (len = valid_items).
        clips: optional in-memory audio [channels, time] at cfg.sample_rate, one per entry (synthetic data).
        skipped: files already skipped while probing, kept for reporting.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        cfg: DataConfig,
        train: bool = True,
        clips: Sequence[np.ndarray] | None = None,
        skipped: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.cfg = cfg
        self.train = train
        self.epoch = 0
        self.segment = max(1, int(round(cfg.segment_seconds * cfg.sample_rate)))
        self.skipped: list[tuple[str, str]] = list(skipped)
        self.entries = list(entries)
        self.cache: list[np.ndarray] | None = None
        if clips is not None:
            self.cache = [to_channels(c, cfg.channels) for c in clips]
        elif self._cache_bytes() <= cfg.cache_mb * 2**20:
            self._load_cache()
        if not self.entries:
            raise DataError(
                f"no readable audio for the {'train' if train else 'valid'} split ({len(self.skipped)} file(s) skipped)"
            )
        lengths = [self._length(i) for i in range(len(self.entries))]
        weights = np.maximum(np.asarray(lengths, dtype=np.float64), self.segment)
        self.cdf = np.cumsum(weights / weights.sum())  # long files give proportionally more crops

    def _cache_bytes(self) -> float:
        secs = sum(e.duration or 0.0 for e in self.entries)
        return secs * self.cfg.sample_rate * self.cfg.channels * 4

    def _decode(self, e: Entry) -> np.ndarray:
        wav, sr = load_audio(e.path)
        return resample(to_channels(wav, self.cfg.channels), sr, self.cfg.sample_rate)

    def _load_cache(self) -> None:
        kept, cache = [], []
        for e in self.entries:
            try:
                cache.append(self._decode(e))
                kept.append(e)
            except (AudioError, sf.LibsndfileError, OSError) as exc:
                self._skip(e, exc)
        self.entries, self.cache = kept, cache

    def _skip(self, e: Entry, exc: BaseException) -> None:
        warnings.warn(f"skipping unreadable audio: {e.path}: {exc}", UnreadableAudioWarning, stacklevel=3)
        self.skipped.append((e.path, str(exc)))

    def _length(self, i: int) -> int:
        """File length in samples at the model rate."""
        if self.cache is not None:
            return self.cache[i].shape[1]
        return int(round((self.entries[i].duration or 0.0) * self.cfg.sample_rate))

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of another epoch (train only; call before iterating a new pass)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.cfg.items_per_epoch if self.train else self.cfg.valid_items

    def _read(self, i: int, start: int) -> np.ndarray:
        """[channels, <= segment] samples from model-rate offset `start` of file i."""
        if self.cache is not None:
            return self.cache[i][:, start : start + self.segment]
        e, sr_out = self.entries[i], self.cfg.sample_rate
        sr_in = e.sample_rate or sr_out
        margin = int(0.01 * sr_in)  # context so the resampler filter has no edge transient in the crop
        # Start on a sample shared by both rate grids so the resampled window lines up with a whole-file
        # resample exactly (no fractional-sample shift).
        step = sr_in // math.gcd(sr_in, sr_out)
        begin = max(0, int(start * sr_in / sr_out) - margin) // step * step
        frames = int(math.ceil((start + self.segment) * sr_in / sr_out)) + margin - begin
        with sf.SoundFile(e.path) as f:
            f.seek(begin)
            wav = f.read(frames, dtype="float32", always_2d=True).T
        if wav.shape[1] == 0 or not np.all(np.isfinite(wav)):
            raise AudioError(f"{e.path}: no finite samples at offset {begin}")
        wav = resample(to_channels(wav, self.cfg.channels), sr_in, sr_out)
        lead = int(round(start - begin * sr_out / sr_in))  # crop start inside the resampled read
        return wav[:, lead : lead + self.segment]

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        # Randomness depends only on (seed, epoch, index): reproducible for any worker count or rank.
        stream = (self.cfg.seed, self.epoch, index) if self.train else (self.cfg.seed, 2**31 - 1, index)
        rng = np.random.default_rng(stream)
        for attempt in range(8):
            if self.train:
                u = rng.random() * self.cdf[-1]
                i = min(int(np.searchsorted(self.cdf, u, side="right")), len(self.entries) - 1)
            else:
                i = (index + attempt) % len(self.entries)
            length = self._length(i)
            start = int(rng.integers(0, max(length - self.segment, 0) + 1))
            try:
                x = self._read(i, start)
            except (AudioError, sf.LibsndfileError, OSError) as exc:
                # A file that broke after probing: warn, drop its weight in this process, pick another.
                self._skip(self.entries[i], exc)
                weights = np.diff(self.cdf, prepend=0.0)
                weights[i] = 0.0
                if weights.sum() <= 0:
                    break
                self.cdf = np.cumsum(weights)
                continue
            if x.shape[1] < self.segment:  # short file: zero-pad at the end
                x = np.pad(x, ((0, 0), (0, self.segment - x.shape[1])))
            jitter = self.cfg.gain_jitter_db if self.train else 0.0
            x = normalize_loudness(x.astype(np.float32), self.cfg.loudness_db, jitter, rng)
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        raise DataError(f"no readable audio left ({len(self.skipped)} file(s) skipped)")


def _split_entries(entries: list[Entry], cfg: DataConfig) -> tuple[list[Entry], list[Entry]]:
    if entries and all(e.split for e in entries):
        return [e for e in entries if e.split == "train"], [e for e in entries if e.split == "valid"]
    keyed = [(hash_unit(e.key or e.path, cfg.seed), e) for e in entries]
    valid = [e for u, e in keyed if u < cfg.valid_fraction]
    train = [e for u, e in keyed if u >= cfg.valid_fraction]
    if not valid and cfg.valid_fraction > 0 and len(entries) >= 2:
        lowest = min(keyed, key=lambda t: t[0])[1]  # too few files for the fraction: hold out one
        valid, train = [lowest], [e for e in train if e is not lowest]
    return train, valid


def build_datasets(cfg: DataConfig) -> tuple[CropDataset, CropDataset]:
    """Train and validation datasets for `cfg` (raises DataError when nothing usable is found)."""
    if cfg.segment_seconds <= 0 or cfg.channels < 1 or cfg.items_per_epoch < 1 or cfg.valid_items < 1:
        raise DataError("need segment_seconds > 0, channels >= 1, items_per_epoch >= 1 and valid_items >= 1")
    if cfg.synthetic:
        n_valid = max(1, cfg.synthetic_files // 8)
        clips = [
            synth_clip(KINDS[i % len(KINDS)], cfg.synthetic_seconds, cfg.sample_rate, cfg.seed * 7919 + i)
            for i in range(cfg.synthetic_files + n_valid)
        ]
        entries = [
            Entry(f"synthetic:{KINDS[i % len(KINDS)]}:{i}", cfg.synthetic_seconds, cfg.sample_rate, 1)
            for i in range(len(clips))
        ]
        n = cfg.synthetic_files
        return (CropDataset(entries[:n], cfg, True, clips[:n]), CropDataset(entries[n:], cfg, False, clips[n:]))
    if not cfg.sources:
        raise DataError("no data sources given (set data.sources, or data.synthetic: true)")
    entries, skipped = probe(find_audio(cfg.sources))
    if not entries:
        raise DataError(f"no readable audio files in {cfg.sources} ({len(skipped)} file(s) skipped)")
    train, valid = _split_entries(entries, cfg)
    if not train:
        raise DataError(f"the train split of {cfg.sources} is empty")
    if not valid:
        warnings.warn("no validation files: validating on fixed crops of the training files", stacklevel=2)
        valid = [replace(e) for e in train]
    return CropDataset(train, cfg, True, skipped=skipped), CropDataset(valid, cfg, False)


def _worker_init(worker_id: int) -> None:
    # torch derives each worker's seed from the loader's seeded generator: seed the other RNGs from it too.
    seed = torch.utils.data.get_worker_info().seed % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loaders(
    cfg: DataConfig,
    batch_size: int,
    distributed: bool | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Train/valid DataLoaders yielding float32 [batch, channels, segment_samples].

    distributed=None uses DistributedSampler when torch.distributed is initialised; rank/world_size can be
    given explicitly instead. Workers are not persistent, so `set_epoch` takes effect on the next pass.
    """
    train_ds, valid_ds = build_datasets(cfg)
    dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
    use_dist = dist_on if distributed is None else distributed
    samplers: list[DistributedSampler | None] = [None, None]
    if use_dist:
        if not dist_on and (rank is None or world_size is None):
            raise DataError("distributed loaders need torch.distributed initialised or rank and world_size")
        kw = {} if rank is None else {"rank": rank, "num_replicas": world_size}
        samplers = [
            DistributedSampler(train_ds, shuffle=False, drop_last=True, **kw),
            DistributedSampler(valid_ds, shuffle=False, drop_last=False, **kw),
        ]
    rank_offset = (torch.distributed.get_rank() if dist_on else rank) or 0
    loaders = []
    for ds, sampler, train in ((train_ds, samplers[0], True), (valid_ds, samplers[1], False)):
        loaders.append(
            DataLoader(
                ds,
                batch_size=batch_size,
                sampler=sampler,
                shuffle=False,
                drop_last=train,
                num_workers=cfg.num_workers,
                worker_init_fn=_worker_init if cfg.num_workers > 0 else None,
                generator=torch.Generator().manual_seed(cfg.seed * 1000 + rank_offset),
                pin_memory=torch.cuda.is_available(),
                persistent_workers=False,
            )
        )
    return loaders[0], loaders[1]


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Point a loader's dataset (and DistributedSampler) at `epoch` before iterating it."""
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def forever(loader: DataLoader, start_epoch: int = 0) -> Iterator[torch.Tensor]:
    """Yield batches endlessly, advancing the epoch after each pass (for step-based training)."""
    epoch = start_epoch
    while True:
        set_epoch(loader, epoch)
        yield from loader
        epoch += 1
