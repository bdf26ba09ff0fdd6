"""Ranks of ground-truth items among scored candidates: the one rule retrieval metrics, in-batch training
metrics and worst-query tables share (a leaf module, so tasks and evaluation need not import each other).

Ties are counted against the query: every non-ground-truth item scoring at least as high ranks above it.
"""

from __future__ import annotations

import torch


def query_ranks(scores: torch.Tensor, ground_truth: torch.Tensor) -> torch.Tensor:
    """1-based rank per query. scores [Q, G]; ground_truth bool [Q, G] with at least one True per row."""
    if scores.shape != ground_truth.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and ground_truth {tuple(ground_truth.shape)} differ in shape")
    if not ground_truth.any(dim=1).all():
        missing = int((~ground_truth.any(dim=1)).nonzero()[0])
        raise ValueError(f"query {missing} has no ground-truth item")
    scores = scores.float()
    best_truth = scores.masked_fill(~ground_truth, float("-inf")).max(dim=1, keepdim=True).values
    above = (scores >= best_truth) & ~ground_truth
    return above.sum(dim=1) + 1
