"""The narrow seam between the trainer and whatever runs the optimisation (DeepSpeed, plain torch, DDP)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.tasks.base import TaskOutput


class Engine(Protocol):
    """set_boundary -> forward -> backward -> step once per micro-batch; step() says when an optimiser step
    happened (on the micro-batch marked last).

    `module` is the task (model + objectives) in the engine's dtype on `device`; `frames_dtype` is what
    frames are cast to before the model sees them (None: left as the loader made them); `optimizer` is
    the optimiser (or DeepSpeed's wrapper of it), for reports such as the state each rank holds.
    """

    rank: int
    world_size: int
    micro_batch_size: int
    grad_accum: int
    module: nn.Module
    device: torch.device
    frames_dtype: torch.dtype | None
    optimizer: Any

    def forward(self, batch: VideoTextBatch, **task_kwargs: Any) -> TaskOutput: ...

    def without_grad(self, fn: Callable[[VideoTextBatch], Any], batch: VideoTextBatch) -> Any:
        """fn(batch) with the module in training mode, no gradient, the batch placed and cast as forward does
        it (the first pass of a planned step)."""
        ...

    def set_boundary(self, last: bool) -> None:
        """Before each micro-batch: whether its backward is the last of the optimiser step."""
        ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> bool: ...

    def learning_rates(self) -> dict[str, float]: ...

    def grad_norm(self) -> float | None: ...

    def loss_scale(self) -> float | None: ...

    def overflow_steps(self) -> int: ...

    def save(self, save_dir: Path, tag: str, client_state: dict[str, Any]) -> None: ...

    def load(self, save_dir: Path, tag: str) -> dict[str, Any]: ...


def mean_over_ranks(values: dict[str, float], world_size: int) -> dict[str, float]:
    """Average logged scalars over ranks (one small all_reduce), so rank 0 prints the global picture."""
    if world_size == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return {k: float(v) / world_size for k, v in zip(keys, tensor.tolist())}
