"""ResidualVQ: wiring gradients against explicit references, encode/decode, k-means, dead codes, dropout."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.quantize import ResidualVQ, RVQConfig, VectorQuantizer, VQConfig
from rotcodec.quantize.rotation import rotate_to


def small_rvq(estimator: str, wiring: str, n_q: int = 3, dim: int = 8, k: int = 16, **kw) -> ResidualVQ:
    torch.manual_seed(0)
    kw.setdefault("kmeans_init", False)
    kw.setdefault("dead_code_threshold", 0.0)
    return ResidualVQ(dim, n_q, k, estimator=estimator, wiring=wiring, **kw).eval()


def lam_r(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Dense λ R for one row, float64."""
    e, q = e.double(), q.double()
    eh, qh = e / e.norm(), q / q.norm()
    r = (eh + qh) / (eh + qh).norm()
    R = torch.eye(len(e), dtype=torch.float64) - 2 * torch.outer(r, r) + 2 * torch.outer(qh, eh)
    return q.norm() / e.norm() * R


def reference_jacobians(rvq: ResidualVQ, x_row: torch.Tensor, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(detached, chained) Jacobians d quantized / d x for one row, from REFERENCE §1's derivation."""
    d = x_row.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    residual = x_row.clone()
    mats = []
    for stage in rvq.stages:
        q = stage.decode(stage.encode(residual[None]))[0]
        mats.append(lam_r(residual, q) if estimator == "rotation" else eye.clone())
        residual = residual - q
    detached = sum(mats)
    prod = eye.clone()
    for m in mats:
        prod = (eye - m) @ prod
    chained = eye - prod
    return detached, chained


@pytest.mark.parametrize("estimator", ["rotation", "ste"])
@pytest.mark.parametrize("wiring", ["detached", "chained"])
def test_wiring_gradients_match_reference(estimator: str, wiring: str) -> None:
    rvq = small_rvq(estimator, wiring)
    x = torch.randn(2, 8, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    g = torch.randn(2, 8, 5, generator=torch.Generator().manual_seed(4))
    out = rvq(x)
    assert float(out.stats["vq/rotation_fallback"]) == 0
    out.quantized.backward(g)
    for b in range(2):
        for t in range(5):
            jd, jc = reference_jacobians(rvq, x.detach()[b, :, t], estimator)
            ref = (jd if wiring == "detached" else jc).T @ g[b, :, t].double()
            torch.testing.assert_close(x.grad[b, :, t].double(), ref, rtol=1e-4, atol=1e-5)
    if estimator == "ste":  # closed forms: n_q·g and g
        factor = rvq.n_q if wiring == "detached" else 1
        torch.testing.assert_close(x.grad, factor * g)


def test_encode_decode_equals_forward_and_prefix_property() -> None:
    rvq = small_rvq("rotation", "detached", n_q=4)
    x = torch.randn(3, 8, 7)
    out = rvq(x)
    codes = rvq.encode(x)
    assert codes.shape == (3, 4, 7) and codes.dtype == torch.int64
    assert torch.equal(codes, out.codes)
    assert torch.equal(rvq.decode(codes), out.quantized)
    for k in range(1, 5):
        assert torch.equal(rvq.encode(x, k), codes[:, :k])
        assert torch.equal(rvq(x, n_q=k).quantized, rvq.decode(codes[:, :k]))
    # more stages, smaller error
    errs = [(x - rvq.decode(codes[:, :k])).pow(2).sum().item() for k in range(1, 5)]
    assert errs == sorted(errs, reverse=True)
    with pytest.raises(ValueError, match="n_q"):
        rvq.encode(x, 5)


@settings(max_examples=20, deadline=None)
@given(
    n_q=st.integers(1, 4),
    k=st.integers(2, 40),
    dim=st.integers(1, 12),
    t=st.integers(1, 9),
    values=st.sampled_from([None, "unit", "raw"]),
    seed=st.integers(0, 1000),
)
def test_property_codes_in_range_and_roundtrip(
    n_q: int, k: int, dim: int, t: int, values: str | None, seed: int
) -> None:
    torch.manual_seed(seed)
    factorised = {"codebook_dim": 4, "factorised_values": values} if values else {}
    rvq = ResidualVQ(dim, n_q, k, kmeans_init=False, **factorised).eval()
    x = torch.randn(2, dim, t)
    codes = rvq.encode(x)
    assert codes.min() >= 0 and codes.max() < k
    assert torch.equal(rvq.decode(codes), rvq(x).quantized)


@settings(max_examples=20, deadline=None)
@given(
    n_q=st.integers(1, 4),
    k=st.integers(3, 40),
    keep=st.integers(2, 40),
    values=st.sampled_from([None, "unit", "raw"]),
    seed=st.integers(0, 1000),
)
def test_property_a_trimmed_last_stage_picks_the_nearest_of_its_first_codes(
    n_q: int, k: int, keep: int, values: str | None, seed: int
) -> None:
    torch.manual_seed(seed)
    keep = min(keep, k)
    factorised = {"codebook_dim": 4, "factorised_values": values} if values else {}
    rvq = ResidualVQ(6, n_q, k, kmeans_init=False, **factorised).eval()
    x = torch.randn(2, 6, 5)
    full, trimmed = rvq.encode(x), rvq.encode(x, last_codes=keep)
    assert torch.equal(trimmed[:, :-1], full[:, :-1])  # earlier stages never change
    assert trimmed.min() >= 0 and trimmed[:, -1].max() < keep
    # the last stage's pick is the nearest of the kept codes to what the earlier stages left
    last = rvq.stages[n_q - 1]
    residual = x - rvq.decode(full[:, :-1]) if n_q > 1 else x
    rows = residual.permute(0, 2, 1).reshape(-1, 6)
    key = last._search_key(last._project(rows))
    dist = torch.cdist(key, last.lookup_codebook()[:keep])
    picked = dist.gather(1, trimmed[:, -1].reshape(-1, 1)).squeeze(1)
    torch.testing.assert_close(picked, dist.min(1).values)
    # every stage's trimmed codes at several sizes in one pass, as the rate planner measures them
    at_once, gain = rvq.encode_trimmed(x, [keep, 2])
    assert at_once.shape == (2, n_q, 2, 5) and torch.equal(at_once[:, n_q - 1, 0], trimmed[:, -1])
    # and how much each trimmed stage lowers the squared latent error, summed over frames
    left = (x - rvq.decode(trimmed)).pow(2).sum()
    torch.testing.assert_close(gain[n_q - 1, 0], residual.pow(2).sum() - left, rtol=1e-4, atol=1e-4)
    assert torch.equal(at_once[:, 0, 1], rvq.encode(x, 1, last_codes=2)[:, 0])
    with pytest.raises(ValueError, match="last_codes"):
        rvq.encode(x, last_codes=k + 1)


def test_permuting_codes_renumbers_without_changing_the_quantizer() -> None:
    rvq = small_rvq("rotation", "detached", n_q=2)
    x = torch.randn(3, 8, 7)
    codes = rvq.encode(x)
    before = rvq.decode(codes)
    k = rvq.stages[0].cfg.codebook_size
    order = torch.randperm(k, generator=torch.Generator().manual_seed(1))
    rvq.stages[0].permute_codes_(order)
    renumbered = rvq.encode(x)
    inverse = torch.argsort(order)
    assert torch.equal(renumbered[:, 0], inverse[codes[:, 0]]) and torch.equal(renumbered[:, 1], codes[:, 1])
    torch.testing.assert_close(rvq.decode(renumbered), before)
    with pytest.raises(ValueError, match="permutation"):
        rvq.stages[0].permute_codes_(torch.zeros(k, dtype=torch.long))


def clustered(n: int, centers: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, centers.shape[0], (n,), generator=gen)
    return centers[idx] + noise * torch.randn(n, centers.shape[1], generator=gen)


def test_kmeans_init_finds_clusters() -> None:
    torch.manual_seed(0)
    centers = torch.randn(8, 6) * 5
    rows = clustered(800, centers, 0.05, seed=1)
    vq = VectorQuantizer(VQConfig(dim=6, codebook_size=8, kmeans_init=True, kmeans_iters=20, dead_code_threshold=0))
    random_err = vq.eval()(rows).stats["quant_error"].item()
    out = vq.train()(rows)
    assert bool(vq.initted)
    assert out.stats["quant_error"].item() < 0.01 < random_err
    assert out.stats["usage"].item() == 1.0


def test_ema_moves_codes_to_cluster_means() -> None:
    rows = torch.randn(500, 4)
    vq = VectorQuantizer(VQConfig(dim=4, codebook_size=4, ema_decay=0.0, kmeans_init=False, dead_code_threshold=0))
    vq.train()
    codes = vq(rows).codes
    for c in codes.unique():
        torch.testing.assert_close(vq.codebook[c], rows[codes == c].mean(0), rtol=1e-3, atol=1e-3)


def test_dead_code_replacement_revives_collapsed_codebook() -> None:
    torch.manual_seed(0)
    cfg = VQConfig(dim=8, codebook_size=64, kmeans_init=False, dead_code_threshold=1.0, ema_decay=0.9)
    vq = VectorQuantizer(cfg)
    with torch.no_grad():  # collapse: every code at the same far point
        vq.codebook.copy_(torch.full((64, 8), 10.0))
        vq.embed_avg.copy_(vq.codebook)
        vq.cluster_size.fill_(0.0)
    rows = torch.randn(1024, 8)
    vq.eval()
    before = vq(rows).stats["usage"].item()
    assert before == 1 / 64
    vq.train()
    for _ in range(5):
        vq(rows)
    vq.eval()
    after = vq(rows).stats["usage"].item()
    assert after > 0.8
    # and without replacement it stays collapsed
    vq2 = VectorQuantizer(VQConfig(dim=8, codebook_size=64, kmeans_init=False, dead_code_threshold=0.0))
    with torch.no_grad():
        vq2.codebook.copy_(torch.full((64, 8), 10.0))
        vq2.embed_avg.copy_(vq2.codebook)
    vq2.train()
    for _ in range(5):
        vq2(rows)
    assert vq2.eval()(rows).stats["usage"].item() <= 2 / 64


@pytest.mark.parametrize("ema", [0.9, None])
def test_dead_code_replacement_writes_only_the_dead_codes(ema: float | None) -> None:
    """Codes under the threshold become current input rows with the threshold as their count (and EMA sum
    to match); every other code, count and sum is left exactly as it was."""
    torch.manual_seed(1)
    vq = VectorQuantizer(VQConfig(dim=4, codebook_size=32, kmeans_init=False, dead_code_threshold=0.5, ema_decay=ema))
    with torch.no_grad():
        vq.cluster_size.copy_(torch.rand(32) * 2)
    dead = vq.cluster_size < 0.5
    assert 0 < int(dead.sum()) < 32
    before = {name: t.detach().clone() for name, t in vq.state_dict().items()}
    rows = torch.randn(50, 4) + 100.0  # far from every code: a replaced code is recognisable
    vq._replace_dead(rows)
    book = vq.codebook
    assert torch.equal(book[~dead], before["codebook"][~dead])
    assert torch.equal(vq.cluster_size[~dead], before["cluster_size"][~dead])
    assert torch.all(vq.cluster_size[dead] == 0.5)
    assert all(bool((rows == code).all(-1).any()) for code in book[dead])
    if ema is not None:
        assert torch.equal(vq.embed_avg[~dead], before["embed_avg"][~dead])
        torch.testing.assert_close(vq.embed_avg[dead], book[dead] * 0.5)


def test_quantizer_dropout_uses_prefixes() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 4, 16, ema_decay=None, kmeans_init=False, dead_code_threshold=0.0, quantizer_dropout=1.0)
    rvq.train()
    x = torch.randn(64, 8, 3)
    out = rvq(x)
    counts = out.n_q_per_example
    assert counts.min() >= 1 and counts.max() <= 4 and len(counts.unique()) == 4
    for b in range(64):
        expect = rvq.decode(out.codes[b : b + 1, : int(counts[b])])
        torch.testing.assert_close(out.quantized[b : b + 1], expect)
    rvq.eval()
    assert (rvq(x).n_q_per_example == 4).all()  # never at inference
    rvq.config.quantizer_dropout = 0.0
    assert (rvq.train()(x).n_q_per_example == 4).all()


def test_codebook_loss_mode_trains_codebook() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 2, 16, ema_decay=None, kmeans_init=False, dead_code_threshold=0.0).train()
    x = torch.randn(4, 8, 10)
    out = rvq(x)
    assert out.loss.item() > 0
    out.loss.backward()
    assert rvq.stages[0].codebook.grad is not None and rvq.stages[0].codebook.grad.abs().sum() > 0


def test_factorised_codes_are_normalised() -> None:
    rvq = ResidualVQ(16, 2, 32, codebook_dim=4, kmeans_init=False).eval()
    book = rvq.stages[0].lookup_codebook()
    torch.testing.assert_close(book.norm(dim=-1), torch.ones(32))
    x = torch.randn(2, 16, 5, requires_grad=True)
    out = rvq(x)
    out.quantized.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("scale", [0.1, 50.0])
def test_only_raw_factorised_values_follow_the_input_scale(scale: float) -> None:
    # The residual can only shrink if a stage returns vectors on the scale of what it was given.
    torch.manual_seed(0)
    x = torch.randn(512, 16) * scale
    errors = {}
    for values in ("raw", "unit"):
        cfg = VQConfig(dim=16, codebook_size=32, codebook_dim=4, factorised_values=values, dead_code_threshold=0)
        vq = VectorQuantizer(cfg).train()
        vq(x)  # k-means init and one EMA update
        with torch.no_grad():
            z = vq.in_proj(x)  # the un-normalised projection
            q = vq.value_codebook()[vq.encode(x)]
        errors[values] = ((z - q).pow(2).sum() / z.pow(2).sum()).item()
    assert errors["raw"] < 0.3
    assert errors["unit"] > 0.5  # unit-norm codes, whatever the input's scale


def test_factorised_values_is_checked() -> None:
    with pytest.raises(ValueError, match="factorised_values"):
        VQConfig(codebook_dim=4, factorised_values="normalised")


def test_stats_are_reported_per_stage() -> None:
    rvq = small_rvq("rotation", "detached", n_q=2)
    out = rvq(torch.randn(2, 8, 6))
    for k in range(2):
        for name in ("usage", "perplexity", "quant_error", "rotation_fallback"):
            assert f"vq{k}/{name}" in out.stats
    assert 1.0 <= out.stats["vq0/perplexity"].item() <= 16.0
    assert 0 < out.stats["vq0/usage"].item() <= 1


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="estimator"):
        RVQConfig(estimator="gumbel")
    with pytest.raises(ValueError, match="wiring"):
        RVQConfig(wiring="parallel")
    with pytest.raises(ValueError, match="codebook_size"):
        RVQConfig(codebook_size=1)


def test_bf16_autocast_forward_backward() -> None:
    rvq = small_rvq("rotation", "detached", n_q=2, dim=16, k=32)
    x = torch.randn(2, 16, 20, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rvq(x.bfloat16())
    (out.quantized.float().pow(2).sum() + out.loss).backward()
    assert torch.isfinite(x.grad).all()


def test_float64_rows_stay_float64_through_the_rotation() -> None:
    """A float64 stage must not round to float32 on the way (the CUDA-vs-CPU gradient check relies on it):
    its gradient equals the rotation of the float64 rows themselves to 1e-12."""
    torch.manual_seed(0)
    vq = VectorQuantizer(VQConfig(dim=16, codebook_size=32, kmeans_init=False, dead_code_threshold=0.0)).double()
    vq.eval()
    x = torch.randn(40, 16, dtype=torch.float64, requires_grad=True)
    g = torch.randn(40, 16, dtype=torch.float64)
    out = vq(x)
    assert out.out.dtype == torch.float64
    (out.out * g).sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    q = vq.codebook[out.codes]
    y, _ = rotate_to(x_ref, q)
    (y * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
