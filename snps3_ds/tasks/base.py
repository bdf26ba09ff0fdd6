"""What every task returns to the engine, and what a task offers when it can see a whole optimiser step.

A plain task maps one micro-batch to a TaskOutput. A step-planning task (the pre-training task) can also take
part in a two-pass optimiser step: the trainer first asks it for the features of each of the step's
micro-batches without gradient (`step_features`), then for a plan over all of them and all ranks
(`plan_step`: the gathered losses and their gradients w.r.t. this rank's features, hard negatives mined from
the whole step), and then runs each micro-batch again through the engine with the plan (`forward(batch,
plan=..., micro=...)`). The trainer knows nothing of what the features are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from snps3_ds.data.batch import VideoTextBatch


@dataclass
class TaskOutput:
    loss: torch.Tensor  # scalar to backpropagate; its value is the micro-batch's loss
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # detached unweighted terms
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars (accuracies, R@K)


@runtime_checkable
class StepPlanningTask(Protocol):
    """A task whose forward takes `plan` and `micro` keyword arguments (see the module doc)."""

    def plans_steps(self, grad_accum: int) -> bool:
        """Whether optimiser steps of `grad_accum` micro-batches should run in two passes."""
        ...

    def step_features(self, batch: VideoTextBatch, micro: int) -> Any:
        """Pass 1, under torch.no_grad, with the same random state as pass 2 will have."""
        ...

    def plan_step(self, features: list[Any], seed: int) -> Any:
        """Collective (every rank, once per step). `seed` derives every random choice of the step. The plan
        has `losses`: the step's global loss values (the trainer checks them for non-finite values)."""
        ...

    def describe_step(self, micro: int, grad_accum: int, world: int, clips: int) -> str:
        """One line for the run's start: what a step's objectives see."""
        ...


@runtime_checkable
class StepScheduledTask(Protocol):
    """A task whose objectives change with the optimiser step (a curriculum): the trainer tells it the step
    before the step's first micro-batch, on every rank and also right after a resume, so what it does is a
    function of the step alone and a resumed run continues the same schedule."""

    def begin_step(self, step: int) -> None:
        """`step`: the optimiser step about to be made, 1-based."""
        ...
