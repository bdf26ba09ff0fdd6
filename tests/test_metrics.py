"""Retrieval metrics against hand-computed matrices."""

from __future__ import annotations

import pytest
import torch

from snps3_ds.evaluation.metrics import query_ranks, retrieval_metrics, text_video_metrics


def test_metrics_ranks_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.2],   # truth 0: rank 1
                           [0.8, 0.3, 0.1],   # truth 1: 0.8 above -> rank 2
                           [0.5, 0.7, 0.1]])  # truth 2: both above -> rank 3
    truth = torch.eye(3, dtype=torch.bool)
    assert query_ranks(scores, truth).tolist() == [1, 2, 3]
    m = retrieval_metrics(scores, truth, ks=(1, 2, 5))
    assert m["R@1"] == pytest.approx(100 / 3) and m["R@2"] == pytest.approx(200 / 3) and m["R@5"] == 100
    assert m["MdR"] == 2 and m["MnR"] == pytest.approx(2.0)


def test_metrics_ties_count_against_the_query() -> None:
    scores = torch.ones(4, 4)  # a model that scores everything equally must not look perfect
    truth = torch.eye(4, dtype=torch.bool)
    assert query_ranks(scores, truth).tolist() == [4, 4, 4, 4]
    assert retrieval_metrics(scores, truth)["R@1"] == 0
    scores = torch.tensor([[0.5, 0.5, 0.1]])  # one tie with a wrong item -> rank 2
    assert query_ranks(scores, torch.tensor([[True, False, False]])).tolist() == [2]


def test_metrics_several_ground_truths_any_hit() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3],
                           [0.9, 0.2, 0.4, 0.1]])
    truth = torch.tensor([[True, False, True, False],    # best truth 0.5; only 0.9 above -> rank 2
                          [False, True, False, True]])   # best truth 0.2; 0.9 and 0.4 above -> rank 3
    assert query_ranks(scores, truth).tolist() == [2, 3]


def test_metrics_k_larger_than_gallery() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.3, 0.2]])  # ranks 1 and 2 in a gallery of 2
    m = retrieval_metrics(scores, torch.eye(2, dtype=torch.bool), ks=(1, 5, 10))
    assert m["R@1"] == 50 and m["R@5"] == 100 and m["R@10"] == 100


def test_metrics_both_directions_with_many_captions_per_video() -> None:
    # 3 captions, 2 videos: captions 0 and 1 describe video 0, caption 2 describes video 1
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    m = text_video_metrics(scores, torch.tensor([0, 0, 1]))
    assert m["t2v/R@1"] == pytest.approx(200 / 3)  # caption 1 ranks video 1 first
    # video 0's captions score 0.9, 0.2 (wrong: 0.3) -> rank 1; video 1: caption 2 at 0.7, wrong 0.8 above -> rank 2
    assert m["v2t/R@1"] == 50 and m["v2t/MdR"] == 1.5 and m["v2t/MnR"] == 1.5  # MdR: mean of ranks 1 and 2


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="no ground-truth"):
        query_ranks(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ValueError, match="shape"):
        query_ranks(torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.bool))
