"""Evaluation metrics: retrieval R@K, median rank (MdR), mean rank (MnR); QA and multi-choice accuracy.

A query's rank is that of its best-scoring ground-truth item (a hit is any ground-truth item). Ties are
counted against the query: every non-ground-truth item scoring at least as high ranks above it, so a
model that scores everything equally gets the worst case (R@K = 0 for K below the gallery size, MdR = MnR
= the gallery size less the query's other ground truths), never perfect or chance-level figures. Scores
with NaN or inf raise NonFiniteScores. MdR averages the two middle ranks (the reference's `np.median`,
CLIP4Clip).
"""

from __future__ import annotations

import torch

from snps3_ds.ranking import median_rank, query_ranks, require_finite


def retrieval_metrics(scores: torch.Tensor, ground_truth: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
                      ) -> dict[str, float]:
    """R@K in percent, MdR and MnR for queries (rows) against a gallery (columns)."""
    require_finite(scores, f"retrieval scores [{scores.shape[0]} queries x {scores.shape[1]} candidates]")
    ranks = query_ranks(scores, ground_truth).float()
    metrics = {f"R@{k}": float((ranks <= k).float().mean() * 100) for k in ks}
    metrics["MdR"] = float(median_rank(ranks))
    metrics["MnR"] = float(ranks.mean())
    return metrics


def text_video_metrics(scores: torch.Tensor, text_video_index: torch.Tensor) -> dict[str, float]:
    """Both directions from text->video scores [N_text, N_video], captions mapped to their video."""
    truth = torch.zeros_like(scores, dtype=torch.bool)
    truth[torch.arange(scores.shape[0]), text_video_index] = True
    return two_way_metrics(scores, scores.T, truth)


def two_way_metrics(t2v: torch.Tensor, v2t: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """t2v/... from text queries [N, B] and v2t/... from video queries [B, N] (re-ranking scores the two
    directions differently); truth bool [N, B]. A video query hits when ANY of its texts is in the top K."""
    forward = retrieval_metrics(t2v, truth)
    backward = retrieval_metrics(v2t, truth.T)
    return {**{f"t2v/{k}": v for k, v in forward.items()}, **{f"v2t/{k}": v for k, v in backward.items()}}


def metric_key(split: str, name: str, num_clips: int | None = None) -> str:
    """`<split>/<name>@<clips>clips`, e.g. msrvtt_1ka/t2v/R@1@16clips; an empty split or no clip count
    leaves that part out (the pre-training evaluation's plain `t2v/R@1`)."""
    key = f"{split}/{name}" if split else name
    return f"{key}@{num_clips}clips" if num_clips else key


def named(metrics: dict[str, float], split: str, num_clips: int | None, variant: str = "") -> dict[str, float]:
    """Every metric under metric_key; `variant` (e.g. rerank, fusion) goes between split and name."""
    return {metric_key(split, f"{variant}/{k}" if variant else k, num_clips): v for k, v in metrics.items()}


def qa_accuracy(predictions: torch.Tensor, labels: torch.Tensor, types: list[str] | None = None
                ) -> dict[str, float]:
    """Open-ended QA accuracy in percent: `acc`, and `acc_<type>` per question type when types are given.

    A label of -1 (answer outside the vocabulary) can never be predicted, so it counts as wrong and stays in
    the denominator, as in the papers' protocol.
    """
    if predictions.shape != labels.shape or labels.dim() != 1 or not len(labels):
        raise ValueError(f"qa_accuracy: expected equal non-empty 1-d predictions and labels, got "
                         f"{tuple(predictions.shape)} and {tuple(labels.shape)}")
    correct = (predictions == labels) & (labels >= 0)
    metrics = {"acc": float(correct.float().mean() * 100)}
    if types is not None:
        if len(types) != len(labels):
            raise ValueError(f"qa_accuracy: {len(types)} question types for {len(labels)} questions")
        for kind in sorted(set(types)):
            chosen = torch.tensor([t == kind for t in types])
            metrics[f"acc_{kind}"] = float(correct[chosen].float().mean() * 100)
    return metrics


def choice_accuracy(correct: torch.Tensor) -> float:
    """Share of multi-choice questions answered right, in percent."""
    if not len(correct):
        raise ValueError("choice_accuracy: no questions")
    return float(correct.float().mean() * 100)
