"""Evaluation collectives: every rank's results to every rank, in rank order.

Evaluation results are uneven across ranks (each reads a disjoint part of the held-out stream), so they
travel as pickled objects (`all_gather_object`, which gloo and NCCL both provide) rather than as equal-size
tensors. Tensors are moved to the CPU first. With NCCL, torch.cuda.set_device(local rank) must have been
called (the launch scripts do). The world size is passed in, never read from globals.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def to_cpu(obj: Any) -> Any:
    """The same structure with every tensor on the CPU (dicts, lists, tuples)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def gather_objects(obj: Any, world_size: int) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank; [obj] in a world of one (no collective)."""
    obj = to_cpu(obj)
    if world_size == 1:
        return [obj]
    if not dist.is_initialized():
        raise RuntimeError(f"world_size={world_size} but torch.distributed is not initialised")
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out
