"""gather_with_grad's two backward collectives (reduce-scatter on NCCL, all-reduce on gloo) give the same
gradients, and both equal the single-process gradient of the full batch. gloo provides both collectives, so
both paths run on 2 CPU ranks; the NCCL run needs two GPUs. And the ranks' BatchNorm statistics, which
data parallelism lets drift apart, become their mean on every rank."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from snps3_ds.distributed import average_batch_norm_stats, gather_with_grad, scatters_gradients
from snps3_ds.processes import free_port

ROWS, DIM = 3, 5


def _inputs(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of the whole batch, and a weight per gathered row (rank-dependent losses below)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(world * ROWS, DIM, generator=generator), torch.randn(world * ROWS, DIM, generator=generator)


def _loss(local: torch.Tensor, weights: torch.Tensor, rank: int, world: int, scatter: bool | None) -> torch.Tensor:
    """Each rank scores its own rows against every gathered row (as the contrastive losses do)."""
    gathered = gather_with_grad(local, rank, world, scatter)
    mine = gathered[rank * ROWS:(rank + 1) * ROWS]
    return (mine @ (gathered * weights).T).tanh().sum() + (gathered ** 3 * weights).sum() / world


def _worker(rank: int, world: int, port: int, backend: str, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    features, weights = (t.to(device) for t in _inputs(world))
    out = {"default_scatters": scatters_gradients()}
    for scatter in (True, False):
        local = features[rank * ROWS:(rank + 1) * ROWS].clone().requires_grad_(True)
        _loss(local, weights, rank, world, scatter).backward()
        out[scatter] = local.grad.cpu()
    results[rank] = out
    dist.destroy_process_group()


def _run(backend: str, world: int = 2) -> dict:
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(world, free_port(), backend, results), nprocs=world, join=True)
    return dict(results)


def _single_process_grad(world: int) -> torch.Tensor:
    """The gradient of the sum of every rank's loss, computed in one process on the whole batch."""
    features, weights = _inputs(world)
    leaf = features.clone().requires_grad_(True)
    total = sum(_loss_full(leaf, weights, rank, world) for rank in range(world))
    total.backward()
    return leaf.grad


def _loss_full(features: torch.Tensor, weights: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    mine = features[rank * ROWS:(rank + 1) * ROWS]
    return (mine @ (features * weights).T).tanh().sum() + (features ** 3 * weights).sum() / world


def _check(results: dict, world: int = 2) -> None:
    want = _single_process_grad(world)
    for scatter in (True, False):
        got = torch.cat([results[r][scatter] for r in range(world)])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for rank in range(world):
        torch.testing.assert_close(results[rank][True], results[rank][False], atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_gather_with_grad_reduce_scatter_and_all_reduce_agree_on_gloo() -> None:
    results = _run("gloo")
    _check(results)
    assert results[0]["default_scatters"] is False, "gloo keeps the all-reduce backward"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="an NCCL group of 2 ranks needs two GPUs")
def test_gather_with_grad_reduce_scatter_and_all_reduce_agree_on_nccl() -> None:
    results = _run("nccl")
    _check(results)
    assert results[0]["default_scatters"] is True, "NCCL reduce-scatters by default"


def test_gather_with_grad_world_of_one_is_the_identity() -> None:
    tensor = torch.randn(2, 3)
    assert gather_with_grad(tensor, 0, 1) is tensor


def _bn_model() -> torch.nn.Module:
    """BatchNorm in fp32 and in bf16 (as DeepSpeed's bf16 casts buffers), one without running statistics,
    and a non-BatchNorm buffer that must be left alone."""
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.BatchNorm2d(2).to(torch.bfloat16),
                                torch.nn.BatchNorm1d(3, track_running_stats=False))
    model.register_buffer("queue", torch.zeros(4))
    return model


def _bn_worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = _bn_model()
    generator = torch.Generator().manual_seed(rank)  # each rank trains on its own batches
    model[0](torch.randn(8, 3, generator=generator) * (rank + 1) + rank)
    model[1](torch.randn(4, 2, 3, 3, generator=generator).to(torch.bfloat16) + 3 * rank)
    model.queue.fill_(rank)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = average_batch_norm_stats(model, world)
    results[rank] = {"before": before, "after": model.state_dict(), "layers": layers}
    dist.destroy_process_group()


def test_average_batch_norm_stats_gives_every_rank_the_mean_of_the_ranks() -> None:
    results = mp.Manager().dict()
    mp.spawn(_bn_worker, args=(2, free_port(), results), nprocs=2, join=True)
    first, second = results[0], results[1]
    assert first["layers"] == second["layers"] == 2, "the layer without running statistics is skipped"
    for key in ("0.running_mean", "0.running_var", "1.running_mean", "1.running_var"):
        assert not torch.equal(first["before"][key], second["before"][key]), f"{key}: the ranks must start apart"
        mean = (first["before"][key].float() + second["before"][key].float()) / 2
        for got in (first["after"][key], second["after"][key]):
            assert got.dtype == first["before"][key].dtype, f"{key} keeps its dtype"
            torch.testing.assert_close(got.float(), mean.to(got.dtype).float())
        assert torch.equal(first["after"][key], second["after"][key])
    assert first["after"]["queue"].eq(0).all() and second["after"]["queue"].eq(1).all(), "other buffers untouched"
    assert first["after"]["0.num_batches_tracked"] == 1


def test_average_batch_norm_stats_in_a_world_of_one_changes_nothing() -> None:
    model = _bn_model()
    model[0](torch.randn(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert average_batch_norm_stats(model, 1) == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
