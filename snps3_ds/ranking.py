"""Ranks of ground-truth items among scored candidates: the one rule retrieval metrics, in-batch training
metrics and worst-query tables share (a leaf module, so tasks and evaluation need not import each other).

Ties are counted against the query: every non-ground-truth item scoring at least as high ranks above it,
so a constant scorer gets the worst rank, never a perfect one. A NaN score is never a hit: a NaN ground
truth is the lowest possible score and a NaN distractor ranks above every ground truth. Evaluation goes
further and refuses non-finite scores outright (`require_finite`): a broken model must fail, not report.
"""

from __future__ import annotations

import torch


class NonFiniteScores(ValueError):
    """Scores with NaN or inf: the model (usually a diverged or corrupt checkpoint) cannot be evaluated."""


def require_finite(scores: torch.Tensor, what: str) -> None:
    """Raise NonFiniteScores naming `what` and how many entries are bad, unless every score is finite."""
    bad = ~torch.isfinite(scores)
    if bad.any():
        raise NonFiniteScores(f"{what}: {int(bad.sum())} of {scores.numel()} scores are NaN or infinite; the "
                              "model is broken (a diverged or corrupt checkpoint?), so no metric is reported")


def query_ranks(scores: torch.Tensor, ground_truth: torch.Tensor) -> torch.Tensor:
    """1-based rank per query. scores [Q, G]; ground_truth bool [Q, G] with at least one True per row."""
    if scores.shape != ground_truth.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and ground_truth {tuple(ground_truth.shape)} differ in shape")
    if not ground_truth.any(dim=1).all():
        missing = int((~ground_truth.any(dim=1)).nonzero()[0])
        raise ValueError(f"query {missing} has no ground-truth item")
    scores = scores.float()
    nan = scores.isnan()
    truth_scores = scores.masked_fill(~ground_truth | nan, float("-inf"))
    best_truth = truth_scores.max(dim=1, keepdim=True).values
    above = ((scores >= best_truth) | nan) & ~ground_truth
    return above.sum(dim=1) + 1


def median_rank(ranks: torch.Tensor) -> torch.Tensor:
    """MdR: the median of the ranks, averaging the two middle ones for an even count, as the reference
    (`np.median(rank) + 1` of 0-based ranks) and CLIP4Clip do; torch's `median` would take the lower one."""
    return torch.quantile(ranks.double(), 0.5).to(torch.float32)
