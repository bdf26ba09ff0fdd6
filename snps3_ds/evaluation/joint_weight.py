"""The fusion logit's weight w in the joint score dual + w * fusion, chosen on a validation split.

The dual-encoder logit (cos / T) and the fusion logit come from different softmaxes over different candidate
sets, so nothing makes their scales comparable, and w = 1 (ALBEF's and BLIP's plain sum) is one choice among
many. A fine-tune that names validation annotations (`task.joint_weight_annotations`, split off the training
videos' distribution and trained on by nothing) scores each weight of WEIGHTS on them from the scores it
already has (no extra fusion pass), keeps the best per task and reports the test annotations under that
weight as `rerank_weighted` / `mc/acc_weighted`. Choosing it on the test split would be tuning on the test
set. WEIGHTS includes 0, the dual encoder's own order, so a fusion scorer that does not help is not forced
in; the ordering is the preference on ties, nearest to the plain sum first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from snps3_ds.evaluation.fusion import Reranked
from snps3_ds.evaluation.mcqa import weighted_correct
from snps3_ds.evaluation.metrics import choice_accuracy, retrieval_metrics

WEIGHTS = (1.0, 0.5, 2.0, 0.25, 4.0, 0.125, 8.0, 0.0)


def choose_weight(quality: Callable[[float], tuple[float, ...]], weights: Sequence[float] = WEIGHTS) -> float:
    """The weight whose quality (compared as a tuple, larger is better) is highest; ties: earlier in `weights`."""
    if not weights:
        raise ValueError("choose_weight: no weights to choose from")
    return max(weights, key=quality)  # max keeps the first of equal maxima


def retrieval_weight(reranked: Reranked, truth: torch.Tensor, weights: Sequence[float] = WEIGHTS) -> float:
    """The weight with the best text->video R@1 of the re-ranked top-k (then R@5, R@10) on this split."""
    def quality(weight: float) -> tuple[float, ...]:
        found = retrieval_metrics(reranked.weighted(weight)[0], truth)
        return found["R@1"], found["R@5"], found["R@10"]
    return choose_weight(quality, weights)


def choice_weight(records: list[dict], weights: Sequence[float] = WEIGHTS) -> float:
    """The weight with the best multi-choice accuracy on these questions (evaluation/mcqa.py's records)."""
    return choose_weight(lambda weight: (choice_accuracy(weighted_correct(records, weight)),), weights)
