"""Datasets, manifests and generated audio for training and evaluation."""

from rotcodec.data.dataset import (
    CropDataset,
    DataConfig,
    DataError,
    build_datasets,
    build_loaders,
    forever,
    normalize_loudness,
    set_epoch,
)
from rotcodec.data.manifest import (
    Entry,
    ManifestError,
    UnreadableAudioWarning,
    find_audio,
    prepare_manifest,
    read_manifest,
    write_manifest,
)
from rotcodec.data.synth import KINDS, synth_clip, write_synthetic_corpus

__all__ = [
    "KINDS",
    "CropDataset",
    "DataConfig",
    "DataError",
    "Entry",
    "ManifestError",
    "UnreadableAudioWarning",
    "build_datasets",
    "build_loaders",
    "find_audio",
    "forever",
    "normalize_loudness",
    "prepare_manifest",
    "read_manifest",
    "set_epoch",
    "synth_clip",
    "write_manifest",
    "write_synthetic_corpus",
]
