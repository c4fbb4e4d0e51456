"""Evaluation: objective metrics, delay alignment and classic-codec baselines (Opus, Codec2, MP3)."""

# `align` (the function) is deliberately not re-exported: it would shadow the `rotcodec.eval.align` module.
from rotcodec.eval.align import AudioInputError, compensate_delay, correlation_peak, estimate_delay
from rotcodec.eval.baselines import (
    BaselineCodec,
    BaselineInputError,
    BaselineResult,
    EncoderFailedError,
    MissingEncoderError,
    get_baseline,
    list_baselines,
)
from rotcodec.eval.metrics import (
    HIGHER_IS_BETTER,
    MetricReport,
    MetricWarning,
    compute_all,
    dnsmos,
    evaluate,
    mel_distance,
    mrstft_distance,
    periodicity_error,
    pesq_wb,
    pitch_error,
    si_sdr,
    stoi,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "AudioInputError",
    "BaselineCodec",
    "BaselineInputError",
    "BaselineResult",
    "EncoderFailedError",
    "MetricReport",
    "MetricWarning",
    "MissingEncoderError",
    "compensate_delay",
    "compute_all",
    "correlation_peak",
    "dnsmos",
    "estimate_delay",
    "evaluate",
    "get_baseline",
    "list_baselines",
    "mel_distance",
    "mrstft_distance",
    "periodicity_error",
    "pitch_error",
    "pesq_wb",
    "si_sdr",
    "stoi",
]
