"""Re-fit a model's quantizer as full-width residual codes, keeping what its encoder and decoder learned.

    rotcodec requantize rotcodec/pretrained/speech16k -o runs/requantized --data train_manifest.tsv

Why: a factorised stage (8-d L2-normalised lookup, separate output projection) returns a value unrelated in
scale and direction to what it was given, so the residual never shrinks and extra stages add little
(`docs/results/residual_scale`). Full-width EMA codes refine by construction: a code is the mean of the
residuals assigned to it. Training such codes from scratch collapsed the latent (`docs/results/latent_collapse`);
starting them from a trained factorised model does not, and costs no training:

1. on `seconds` of training crops, the encoder's latent z and the old quantizer's all-stage value y, the
   vector the decoder was trained to read;
2. a least-squares map y ≈ z A + b, folded into the encoder's last (linear) conv, so the new latent
   z' = z A + b is close to what the decoder expects (the fit's R² is reported);
3. residual k-means: stage k's codebook is the k-means of what stages 1..k−1 leave of z';
4. a model file with every other weight unchanged and `quantizer.codebook_dim` = None, ready for
   `rotcodec train RECIPE --init` with a recipe that also says `codebook_dim: null`.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch.nn.utils import parametrize

from ..models import Codec
from ..models.io import _paths, read_model, save_model
from ..quantize.kmeans import kmeans, nearest
from .export import crop_batches


@dataclass
class RequantizeReport:
    """frames: latent frames fitted on; r2: share of the old quantized value's variance the linear map
    explains; stage_error: relative error ‖z' − RVQ_n(z')‖² / ‖z' − mean‖² after n = 1..N stages (on the
    fitting frames)."""

    frames: int
    r2: float
    stage_error: list[float]


@torch.no_grad()
def collect_latents(
    codec: Codec, sources: list[str], seconds: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent rows z `[N, dim]` and the quantizer's all-stage value y `[N, dim]` over `seconds` of 1 s crops."""
    zs, ys = [], []
    for batch in crop_batches(codec, sources, seconds, seed):
        with parametrize.cached():
            z = codec.embed(batch)
        y = codec.quantizer.decode(codec.quantizer.encode(z))
        zs.append(rearrange(z, "b d t -> (b t) d"))
        ys.append(rearrange(y, "b d t -> (b t) d"))
    return torch.cat(zs), torch.cat(ys)


def fit_affine(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Least squares y ≈ z A + b over rows `[N, dim]`: returns A `[dim, dim]`, b `[dim]` and R²."""
    z1 = torch.cat([z.double(), torch.ones(len(z), 1, dtype=torch.float64)], dim=1)
    sol = torch.linalg.lstsq(z1, y.double()).solution
    resid = y.double() - z1 @ sol
    r2 = 1.0 - float(resid.pow(2).sum() / (y.double() - y.double().mean(0)).pow(2).sum().clamp_min(1e-30))
    return sol[:-1].float(), sol[-1].float(), r2


@torch.no_grad()
def fold_affine_into_encoder(codec: Codec, a: torch.Tensor, b: torch.Tensor) -> None:
    """Make the encoder output z A + b instead of z: its last layer is a linear conv, so the map folds in
    exactly (weight-normed convs get a new direction and per-channel norm)."""
    conv = codec.encoder.model[-1].conv
    weight = conv.weight.detach().clone()  # [out, in, k], the effective (normalised) weight
    new_weight = torch.einsum("oik,op->pik", weight, a)
    new_bias = conv.bias.detach() @ a + b
    if parametrize.is_parametrized(conv, "weight"):
        # torch's weight_norm parametrization: original0 = g [out, 1, 1], original1 = v [out, in, k]
        params = conv.parametrizations.weight
        params.original1.copy_(new_weight)
        params.original0.copy_(new_weight.norm(dim=(1, 2), keepdim=True))
    else:
        conv.weight.copy_(new_weight)
    conv.bias.copy_(new_bias)


@torch.no_grad()
def residual_kmeans(
    z: torch.Tensor, n_q: int, codebook_size: int, iters: int, seed: int = 0
) -> tuple[torch.Tensor, list[float]]:
    """Codebooks `[n_q, K, dim]` fitted stage by stage on what the earlier stages leave of rows z `[N, dim]`,
    and the relative error after each stage."""
    gen = torch.Generator().manual_seed(seed)
    resid = z.float().clone()
    total = (z - z.mean(0)).pow(2).sum().clamp_min(1e-30)
    books, errors = [], []
    for _ in range(n_q):
        book = kmeans(resid, codebook_size, iters, gen, seed_rows=4 * codebook_size)
        resid -= book[nearest(resid, book)]
        books.append(book)
        errors.append(float(resid.pow(2).sum() / total))
    return torch.stack(books), errors


def requantize(
    model: str | Path, sources: list[str], seconds: float, iters: int = 20, seed: int = 0
) -> tuple[Codec, RequantizeReport]:
    """The model at `model` with full-width codes fitted as the module doc says, and what the fit found."""
    codec = read_model(model).codec.eval()
    if codec.config.quantizer.codebook_dim is None:
        raise ValueError(f"{model} already has full-width codes")
    z, y = collect_latents(codec, sources, seconds, seed)
    if len(z) < codec.codebook_size:
        raise ValueError(f"{len(z)} latent frames are too few for {codec.codebook_size} codes: give more --seconds")
    a, b, r2 = fit_affine(z, y)
    cfg = copy.deepcopy(codec.config)
    cfg.quantizer.codebook_dim = None
    new = Codec(cfg).eval()
    state = {k: v for k, v in codec.state_dict().items() if not k.startswith("quantizer.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("quantizer.") for k in missing), (missing, unexpected)
    fold_affine_into_encoder(new, a, b)
    books, errors = residual_kmeans(z @ a + b, new.n_q, new.codebook_size, iters, seed)
    for stage, book in zip(new.quantizer.stages, books, strict=True):
        stage.codebook.copy_(book)
        stage.embed_avg.copy_(book)  # cluster_size is 1 everywhere: codebook = embed_avg / count holds
        stage.cluster_size.fill_(1.0)
        stage.initted.fill_(True)
    return new, RequantizeReport(len(z), r2, errors)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import HelpFormatter, add_threads_option

    p = subparsers.add_parser(
        "requantize",
        help="factorised-code model -> full-width residual codes (fine-tune next)",
        description="Replace a factorised-code model's quantizer by full-width residual codebooks fitted with "
        "k-means on training audio, keeping its encoder and decoder; fine-tune the result next.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", help="model file (NAME or NAME.safetensors/NAME.json) with factorised codes")
    p.add_argument("-o", "--out", required=True, help="output model path (NAME -> NAME.safetensors + NAME.json)")
    p.add_argument("--data", nargs="+", required=True, help="training audio folders or manifests (train split)")
    p.add_argument("--seconds", type=float, default=600.0, help="seconds of 1 s crops to fit on")
    p.add_argument("--iters", type=int, default=20, help="k-means iterations per stage")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and the k-means initialisation")
    p.add_argument("--force", action="store_true", help="overwrite an existing output model")
    add_threads_option(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..cli import use_threads

    use_threads(args.threads)
    existing = [str(p) for p in _paths(args.out) if p.exists()]
    if existing and not args.force:
        raise ValueError(f"{existing[0]} exists: pass --force to overwrite it")
    codec, report = requantize(args.model, args.data, args.seconds, args.iters, args.seed)
    meta = {"requantized_from": str(args.model), "requantize_r2": round(report.r2, 4)}
    weights, json_path = save_model(codec, args.out, extra_meta=meta)
    err = ", ".join(f"{e:.3g}" for e in report.stage_error)
    n = len(report.stage_error)
    print(f"{report.frames} frames; linear fit R² {report.r2:.3f}; latent error after 1..{n} stages: {err}")
    print(f"wrote {weights} and {json_path}")
    return 0
