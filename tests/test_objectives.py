"""Objectives against plain, obviously-correct references; the gathered loss under 2 gloo ranks equals
the single-process full-batch loss, gradients included."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from snps3_ds.objectives.contrastive import GlobalContrastiveLoss
from snps3_ds.objectives.mlm import mlm_loss


def reference_contrastive(text: torch.Tensor, clips: torch.Tensor, temperature: float) -> torch.Tensor:
    """Loops over the definition: t2v multi-positive over clips, v2t one query per clip, averaged."""
    batch, num_clips = clips.shape[:2]
    t2v = []
    for i in range(batch):
        logits = [float(text[i] @ clips[j, c]) / temperature for j in range(batch) for c in range(num_clips)]
        positives = [float(text[i] @ clips[i, c]) / temperature for c in range(num_clips)]
        t2v.append(math.log(sum(math.exp(x) for x in logits)) - math.log(sum(math.exp(x) for x in positives)))
    v2t = []
    for j in range(batch):
        for c in range(num_clips):
            logits = [float(text[k] @ clips[j, c]) / temperature for k in range(batch)]
            v2t.append(math.log(sum(math.exp(x) for x in logits)) - logits[j])
    return torch.tensor((sum(t2v) / len(t2v) + sum(v2t) / len(v2t)) / 2)


def _features(seed: int, batch: int = 6, clips: int = 3, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(batch, dim, generator=gen, dtype=torch.float64), dim=-1)
    video = F.normalize(torch.randn(batch, clips, dim, generator=gen, dtype=torch.float64), dim=-1)
    return text, video


def test_contrastive_matches_reference() -> None:
    text, clips = _features(0)
    out = GlobalContrastiveLoss(temperature=0.1)(text, clips, torch.ones(clips.shape[:2], dtype=torch.bool))
    assert float(out.loss) == pytest.approx(float(reference_contrastive(text, clips, 0.1)), abs=1e-5)


def test_contrastive_ignores_padded_clips() -> None:
    text, clips = _features(1)
    mask = torch.ones(clips.shape[:2], dtype=torch.bool)
    mask[2, 1:] = False  # video 2 is an image: one real clip
    garbage = clips.clone()
    garbage[2, 1:] = torch.randn_like(garbage[2, 1:])
    loss_a = GlobalContrastiveLoss(0.1)(text, clips, mask).loss
    loss_b = GlobalContrastiveLoss(0.1)(text, garbage, mask).loss
    assert float(loss_a) == pytest.approx(float(loss_b), abs=1e-6)


def test_mlm_loss_matches_cross_entropy_and_handles_no_mask() -> None:
    logits = torch.randn(5, 11, requires_grad=True)
    targets = torch.tensor([1, 2, 3, 4, 5])
    out = mlm_loss(logits, targets)
    assert float(out.loss) == pytest.approx(float(F.cross_entropy(logits, targets)), abs=1e-6)
    empty = mlm_loss(logits[:0], targets[:0])
    assert float(empty.loss) == 0.0 and empty.count == 0
    empty.loss.backward()  # a batch with nothing masked still backpropagates


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    text, clips = _features(0)
    per_rank = text.shape[0] // world
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    local_text = text[rows].clone().requires_grad_(True)
    local_clips = clips[rows].clone().requires_grad_(True)
    mask = torch.ones(local_clips.shape[:2], dtype=torch.bool)
    out = GlobalContrastiveLoss(0.1, rank, world)(local_text, local_clips, mask)
    out.loss.backward()
    results[rank] = (float(out.loss), local_text.grad / world, local_clips.grad / world)  # / world: DDP's mean
    dist.destroy_process_group()


def test_contrastive_gathered_over_two_ranks_equals_full_batch() -> None:
    text, clips = _features(0)
    text.requires_grad_(True)
    clips.requires_grad_(True)
    full = GlobalContrastiveLoss(0.1)(text, clips, torch.ones(clips.shape[:2], dtype=torch.bool))
    full.loss.backward()
    results = mp.Manager().dict()
    mp.spawn(_rank_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    mean_loss = (results[0][0] + results[1][0]) / 2
    assert mean_loss == pytest.approx(float(full.loss), abs=1e-6)
    grad_text = torch.cat([results[0][1], results[1][1]])
    grad_clips = torch.cat([results[0][2], results[1][2]])
    torch.testing.assert_close(grad_text, text.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad_clips, clips.grad, atol=1e-6, rtol=1e-5)
