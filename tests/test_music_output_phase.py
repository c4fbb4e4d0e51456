"""The bundled models' envelope tiers, and what music24k's output phase tiers buy at 12 kbps on a committed clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rotcodec.audio import load_audio
from rotcodec.eval.metrics import mel_distance
from rotcodec.inference import load_model
from rotcodec.train.recipe import load_recipe

ROOT = Path(__file__).parent.parent
STRINGS = ROOT / "samples" / "bwv66.6_strings_24k.wav"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("name", "recipe"), [("speech16k", "speech16k_outphase.yaml"), ("music24k", "music24k_outphase.yaml")]
)
def test_bundled_models_carry_the_tiers_of_their_recipes(name: str, recipe: str) -> None:
    """The recipes the model cards name are what the bundled files were exported with."""
    model = load_model(name)
    assert [env.cfg for env in model.codec.envelopes] == load_recipe(ROOT / "recipes" / recipe).model.envelopes


def test_music_at_12_kbps_sends_output_phases_and_decodes_closer_than_without() -> None:
    """At 12 kbps music24k plans an output phase tier beside at least 2 stages; the best layout of any tier
    without output phases that fits the same rate decodes further from the input (mel distance)."""
    model = load_model("music24k")
    x, sr = load_audio(str(STRINGS))
    assert sr == model.sample_rate
    x = np.ascontiguousarray(x[:1], dtype=np.float32)
    seconds = x.shape[1] / sr
    costs = model.row_costs(x, sr)
    envelopes = [env.cfg for env in model.codec.envelopes]

    def coded(tier: int | bool) -> tuple[object, float, float]:
        lay = model.plan(kbps=12, costs=costs, seconds=seconds, tier=tier)
        data = model.compress(x[0], sr, layout=lay)
        y = model.decompress(data)[0][0]
        return lay, len(data) * 8 / seconds / 1000, mel_distance(x[0], y, sr)

    lay, kbps, mel = coded(True)
    assert envelopes[lay.envelope].output_phases > 0 and lay.n_q >= 2, lay
    others = [coded(t) for t, cfg in enumerate(envelopes) if not cfg.output_phases]
    fitting = [m for _, k, m in others if k <= kbps * 1.02]
    assert fitting and mel < min(fitting) - 0.002, (kbps, mel, others)
