"""What each stream layout of a model is worth: the measured quality that `CodecModel.plan` ranks layouts by.

A layout is a number of RVQ stages plus, for models with band gains, one envelope tier or none
(`Codec.layout`). Which mix of stages and band gains buys the most quality per bit differs by model: on
speech16k finer band gains beat stages past the first few, on a model whose stages refine further they
may not. So export measures it: for every layout, the multi-scale mel distance between 1-second crops of
real audio and their decode, stored in the model file's metadata as

    "layout_quality": {"metric": "mel_distance", "seconds": S, "table": [[n_q, tier, value], ...]}

with tier -1 for no band gains. The planner then sends, of the layouts that fit the request, the one with the
lowest value. Cost: one encode per crop and one decode per stage count; band gains are measured and applied
on each decode, as `Codec.encode` and `Codec.decode` do.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..losses.mel import MultiScaleMelLoss
from ..models import Codec

NO_TIER = -1


@torch.no_grad()
def measure_layout_quality(codec: Codec, batches: Iterable[torch.Tensor]) -> list[list[float]]:
    """Mean mel distance of every layout over `batches` of audio `[batch, channels, time]` at the codec's
    rate: rows [n_q, tier (NO_TIER: none), value], for n_q 1..codec.n_q and each tier."""
    mel = MultiScaleMelLoss(codec.sample_rate).eval()
    tiers = [NO_TIER, *range(len(codec.envelopes))]
    sums = torch.zeros(codec.n_q, len(tiers), dtype=torch.float64)
    count = 0
    p = codec.pitch_rows
    for batch in batches:
        batch = torch.nn.functional.pad(batch, (0, (-batch.shape[-1]) % codec.hop_length))  # whole frames
        x = codec._fold(batch)[:, 0]  # [batch * channels, time]
        codes = codec.encode(batch, codec.n_q, None).flatten(0, 1)  # [batch * channels, pitch + n_q, frames]
        for n in range(1, codec.n_q + 1):
            y = codec._synthesise(codes[:, : p + n])[:, 0]
            for j, tier in enumerate(tiers):
                out = y if tier == NO_TIER else codec.envelopes[tier](y, codec.envelopes[tier].analyse(x, y))
                sums[n - 1, j] += float(mel(out.unsqueeze(1), x.unsqueeze(1))) * x.shape[0]
        count += x.shape[0]
    if count == 0:
        raise ValueError("no audio to measure layout quality on")
    means = sums / count
    rows = range(1, codec.n_q + 1)
    return [[n, tier, round(float(means[n - 1, j]), 5)] for n in rows for j, tier in enumerate(tiers)]
