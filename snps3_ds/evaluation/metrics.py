"""Retrieval metrics: R@K, median rank (MdR) and mean rank (MnR) from a score matrix.

A query's rank is that of its best-scoring ground-truth item (a hit is any ground-truth item). Ties are
counted against the query: every non-ground-truth item scoring at least as high ranks above it, so a
model that scores everything equally gets chance-level figures, never perfect ones.
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


def retrieval_metrics(scores: torch.Tensor, ground_truth: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
                      ) -> dict[str, float]:
    """R@K in percent, MdR and MnR for queries (rows) against a gallery (columns)."""
    ranks = query_ranks(scores, ground_truth).float()
    metrics = {f"R@{k}": float((ranks <= k).float().mean() * 100) for k in ks}
    metrics["MdR"] = float(ranks.median())  # torch's lower median: an observed rank, as usual in this field
    metrics["MnR"] = float(ranks.mean())
    return metrics


def text_video_metrics(scores: torch.Tensor, text_video_index: torch.Tensor) -> dict[str, float]:
    """Both directions from text->video scores [N_text, N_video], captions mapped to their video."""
    truth = torch.zeros_like(scores, dtype=torch.bool)
    truth[torch.arange(scores.shape[0]), text_video_index] = True
    t2v = retrieval_metrics(scores, truth)
    v2t = retrieval_metrics(scores.T, truth.T)
    return {**{f"t2v/{k}": v for k, v in t2v.items()}, **{f"v2t/{k}": v for k, v in v2t.items()}}
