"""In-batch retrieval metrics of a training step: how well each caption finds its video among the batch's."""

from __future__ import annotations

import torch

from snps3_ds.ranking import median_rank, query_ranks


def in_batch_recall(scores: torch.Tensor, targets: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """Text->video R@1/5/10 and median rank of each query row among its columns (detached)."""
    truth = torch.zeros_like(scores, dtype=torch.bool)
    truth[torch.arange(scores.shape[0], device=scores.device), targets] = True
    ranks = query_ranks(scores.detach(), truth).float()
    metrics = {f"{prefix}_t2v_R@{k}": (ranks <= k).float().mean() * 100 for k in (1, 5, 10)}
    metrics[f"{prefix}_t2v_MdR"] = median_rank(ranks)
    return metrics

