"""What every task returns to the engine: one loss to backpropagate plus named terms and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TaskOutput:
    loss: torch.Tensor  # scalar, weighted sum of the terms, carries the graph
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # detached unweighted terms
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars (accuracies, R@K)
