"""The lazy `--kbps` search (`inference.planner.search`) decodes only the stage counts a plan needs and
chooses what pricing every layout would choose; the probe's lead-ins are coded but not counted."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import vowel

from rotcodec.inference import load_model
from rotcodec.inference.model import PROBE_MARGIN
from rotcodec.inference.planner import choose, fill
from rotcodec.inference.pricing import PROBE_LEAD_SECONDS, probe_audio, probe_reads, probe_spans

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_lazy_search_plans_as_pricing_every_layout_would() -> None:
    model = load_model("speech16k")
    sr, seconds = 16000, 10.0
    wav = vowel(sr, seconds, seed=2)[None]
    for kbps in (1.5, 3.0, 6.0, 12.0):
        lazy = model.row_costs(wav, sr)
        layout = model.plan(kbps, costs=lazy, seconds=seconds)
        assert len(lazy.decoded) <= 5, (kbps, lazy.decoded)  # of 24 stage counts

        every = model.row_costs(wav, sr)

        def total(lay, every=every):  # noqa: ANN001, ANN202
            rate = model.bitrate(lay, 1, None, every) * PROBE_MARGIN
            return rate + model.overhead_kbps(lay, 1, seconds)

        options = [(total(lay), lay) for lay in model.layouts()]
        fits = [(rate, lay) for rate, lay in options if rate <= kbps + 1e-9]
        assert layout == fill(model, choose(model, fits, None), kbps, total, every), kbps
        assert total(layout) <= kbps + 1e-9


def test_probe_pieces_read_a_lead_in_that_is_not_counted() -> None:
    sr = 16000
    length = 60 * sr
    reads, skip = probe_reads(length, sr)
    spans = probe_spans(length, sr)
    lead = int(PROBE_LEAD_SECONDS * sr)
    assert reads[0] == spans[0]
    assert all(r == (a - lead, n + lead) for r, (a, n) in zip(reads[1:], spans[1:], strict=True))
    offsets = np.cumsum([0] + [n for _, n in reads])[1:-1]
    assert skip == [(int(o), lead) for o in offsets]
    wav = vowel(sr, 60.0, seed=1)[None]
    probe = probe_audio(wav, sr)
    assert probe.shape[1] == sum(n for _, n in reads) and list(probe.skip) == skip
    costs = load_model("speech16k").row_costs(probe, sr)
    assert int(costs.keep.sum()) == sum(n for _, n in spans) // 320  # every counted frame, no lead-in frame
    assert probe_reads(5 * sr, sr) == ([(0, 5 * sr)], [])  # a short file is its own probe
