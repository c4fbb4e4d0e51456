"""`--kbps` planning: which layout (`StreamLayout`) a stream sends for a rate, from the model's tables or a
file's own costs (`pricing.FileCosts`). `CodecModel.plan` is the entry point; the rule is in its docstring.

With a file's costs the search is lazy, because pricing band gains after n stages takes a decode of n
stages: layouts are tried in the rule's order and a stage count is decoded only when no bound already
settles a layout. Two facts give the bounds: a layout's rate rises with its stage count (a stage costs
about 10 bits a frame, the band gains it saves a few), and band gains cost no less after fewer stages
(the decode is further from the input), so gains measured after m stages are a lower bound for any count
up to m. A plan usually decodes two stage counts: the one it sends and the next.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..bitstream.layout import StreamLayout
from .pricing import FileCosts

if TYPE_CHECKING:
    from .model import CodecModel

Total = Callable[[StreamLayout], float]


def choose(model: CodecModel, fits: list[tuple[float, StreamLayout]], entropy: bool | None) -> StreamLayout:
    """The rule on layouts that fit (rate, layout): the best in the model's `layout_quality` table (of
    equals, the cheaper), else the tier of highest priority, then the costliest band gains (by the tables), then
    the most stages."""
    ranked = [(rate, lay) for rate, lay in fits if (lay.n_q, lay.envelope) in model.layout_quality]
    if ranked:
        return min(ranked, key=lambda o: (model.layout_quality[(o[1].n_q, o[1].envelope)], o[0]))[1]
    return max(fits, key=lambda o: (side_cost(model, o[1].envelope, entropy), o[1].n_q))[1]


def side_cost(model: CodecModel, tier: int | None, entropy: bool | None) -> tuple[int, float]:
    """A tier's place in the rule: its `priority`, then its one-stage layout's rate by the tables (ties keep the
    model's order)."""
    priority = 0 if tier is None else model.codec.envelopes[tier].cfg.priority
    return priority, model.bitrate(model.codec.layout(1, tier), 1, entropy)


def search(
    model: CodecModel,
    layouts: list[StreamLayout],
    kbps: float,
    total: Total,
    bound: Callable[[StreamLayout, int], float],
    by_tables: Total,
    costs: FileCosts,
    entropy: bool | None,
    guess: StreamLayout,
) -> StreamLayout:
    """`choose` over the layouts whose `total` fits `kbps`, decoding as few stage counts as it can: `bound(lay,
    m)` prices lay with band gains measured after m >= lay.n_q stages, a lower bound of its `total`;
    `by_tables` prices it from the tables alone and `guess` is the tables' plan: they say where to start.
    The cheapest layout if none fits."""
    if guess.envelope is not None:
        costs.rows[guess.n_q]  # noqa: B018 - the first decode: its gains bound every count up to it

    def fits(lay: StreamLayout) -> bool:
        above = [m for m in costs.decoded if m > lay.n_q]
        if lay.envelope is not None and lay.n_q not in costs.decoded and above:
            if bound(lay, min(above)) > kbps + 1e-9:
                return False
        return total(lay) <= kbps + 1e-9

    tiers: dict[int | None, list[StreamLayout]] = {}
    for lay in layouts:
        tiers.setdefault(lay.envelope, []).append(lay)
    for stages in tiers.values():
        stages.sort(key=lambda lay: lay.n_q)

    def most_stages(tier: int | None) -> StreamLayout | None:
        """The layout of `tier` with the most stages that fits (rates rise with the stage count)."""
        stages = tiers[tier]
        start = (
            guess.n_q
            if guess.envelope == tier
            else max((lay.n_q for lay in stages if by_tables(lay) <= kbps), default=1)
        )
        counts = [lay.n_q for lay in stages]  # from the tier's min_stages up
        i = sum(n <= start for n in counts) - 1 if start >= counts[0] else 0
        if fits(stages[i]):
            while i + 1 < len(stages) and fits(stages[i + 1]):
                i += 1
            return stages[i]
        for j in range(i - 1, -1, -1):
            if fits(stages[j]):
                return stages[j]
        return None

    ranked = [lay for lay in layouts if (lay.n_q, lay.envelope) in model.layout_quality]
    if ranked:  # best measured quality first; of equals, the cheaper
        ranked.sort(key=lambda lay: model.layout_quality[(lay.n_q, lay.envelope)])
        for i, lay in enumerate(ranked):
            q = model.layout_quality[(lay.n_q, lay.envelope)]
            same = [o for o in ranked[i:] if model.layout_quality[(o.n_q, o.envelope)] == q]
            found = [(total(o), o) for o in same if fits(o)]
            if found:
                return min(found, key=lambda o: o[0])[1]
    order = sorted(tiers, key=lambda t: side_cost(model, t, entropy), reverse=True)  # stable: ties keep their order
    while order:
        level = side_cost(model, order[0], entropy)
        group = [t for t in order if side_cost(model, t, entropy) == level]
        order = order[len(group) :]
        best = [lay for lay in map(most_stages, group) if lay is not None]
        if best:
            return max(best, key=lambda lay: lay.n_q)  # of equals, the first in the model's order
    return min((lay for stages in tiers.values() for lay in stages[:1]), key=total)  # one stage is cheapest


def fill(model: CodecModel, layout: StreamLayout, kbps: float, total: Total, costs: FileCosts | None) -> StreamLayout:
    """`layout` plus one more stage trimmed to the most codes whose bits still fit `kbps` (`total`: a
    layout's planned rate), so a file spends what it was given rather than up to a stage less; only sizes
    that, on the file's probe (`costs`), bring the latent closer than no such stage. `layout` itself
    when none fits, nothing was measured, or the model's codes are not sorted by use (`sorted_codes`)."""
    if layout.n_q >= model.n_q or not model.sorted_codes or costs is None:
        return layout
    for j, k in enumerate(costs.sizes):
        trimmed = model.codec.layout(layout.n_q + 1, layout.envelope, k)
        if costs.helps[layout.n_q, j] and total(trimmed) <= kbps + 1e-9:
            return trimmed
    return layout
