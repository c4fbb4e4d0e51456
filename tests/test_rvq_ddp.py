"""Two CPU processes (gloo): EMA statistics are all-reduced, so both ranks keep one codebook, and it equals the
codebook a single process gets from the union of both ranks' batches."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rotcodec.quantize import ResidualVQ


def make_rvq(kmeans: bool, dead: float = 0.5) -> ResidualVQ:
    torch.manual_seed(0)  # identical start on every rank
    return ResidualVQ(8, 3, 32, kmeans_init=kmeans, dead_code_threshold=dead, ema_decay=0.9)


def batches(rank: int, steps: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + rank)
    return [torch.randn(4, 8, 16, generator=gen) * (1 + rank) for _ in range(steps)]


def worker(rank: int, port: int, out_dir: str, kmeans: bool, dead: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    rvq = make_rvq(kmeans, dead).train()
    for x in batches(rank, 6):
        rvq(x)
    torch.save({k: v.clone() for k, v in rvq.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp_path, kmeans: bool, dead: float) -> tuple[dict, dict]:
    mp.spawn(worker, args=(free_port(), str(tmp_path), kmeans, dead), nprocs=2, join=True)
    load = lambda r: torch.load(tmp_path / f"rank{r}.pt", weights_only=True)  # noqa: E731 - test's own files
    return load(0), load(1)


def test_ddp_ranks_share_one_codebook(tmp_path) -> None:
    s0, s1 = run_ranks(tmp_path, kmeans=True, dead=0.5)  # k-means init and dead-code replacement included
    for key in s0:
        assert torch.equal(s0[key], s1[key]), key
    assert not torch.equal(s0["stages.0.codebook"], make_rvq(True).state_dict()["stages.0.codebook"])


def test_ddp_equals_single_process_on_union(tmp_path) -> None:
    s0, _ = run_ranks(tmp_path, kmeans=False, dead=0.0)
    single = make_rvq(False, dead=0.0).train()
    for x0, x1 in zip(batches(0, 6), batches(1, 6), strict=True):
        single(torch.cat([x0, x1]))  # one process sees the union of both ranks' batches
    for key, value in single.state_dict().items():
        torch.testing.assert_close(s0[key], value, rtol=1e-4, atol=1e-5, msg=key)
