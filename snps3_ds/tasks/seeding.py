"""Random state inside a training micro-batch: one base seed, drawn first, and a seed per fusion pass from it.

The trainer seeds torch before each micro-batch (snps3_ds.engine.steps); the task draws a base seed from that
state before anything else, then runs each fusion pass (masked tokens, level 2, VTM) under its own seed from
the base. So a pass sees the same dropout whether the micro-batch runs alone, as the first or the second pass
of a planned step, or on another rank layout, however many random numbers the other passes consumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from snps3_ds.data.seeds import stream_seed
from snps3_ds.distributed import tracked_batch_norms

FUSION_PASSES = ("level2", "vtm", "mlm")


def draw_base() -> int:
    """A 62-bit seed from torch's current random state (the first draw of a micro-batch)."""
    return int(torch.randint(0, 1 << 62, (1,)))


def fusion_seed(base: int, name: str) -> int:
    return stream_seed(base, FUSION_PASSES.index(name))


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """torch's random state set to `seed` inside, restored after (CPU and this CUDA device)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed % (1 << 63))
        yield


@contextmanager
def batchnorm_statistics_kept(module: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics (and batch counters) as they were before: a first pass without gradient
    must not update them, since the second pass over the same micro-batch does."""
    saved = [(m, {n: getattr(m, n).clone() for n in ("running_mean", "running_var", "num_batches_tracked")
                  if getattr(m, n, None) is not None})
             for _, m in tracked_batch_norms(module)]
    try:
        yield
    finally:
        for m, buffers in saved:
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
