"""Downstream evaluation metrics against hand-computed matrices: retrieval (ties, many ground truths,
DiDeMo paragraphs, K beyond the gallery, re-ranking within the top-k), QA and multi-choice accuracy, names."""

from __future__ import annotations

import pytest
import torch

from snps3_ds.evaluation.fusion import fusion_matrix, rerank, rerank_matrix, topk_mask
from snps3_ds.evaluation.metrics import (choice_accuracy, metric_key, named, qa_accuracy, query_ranks,
                                         text_video_metrics, two_way_metrics)
from snps3_ds.tasks.mcqa import choice_correct


def test_metrics_ties_are_pessimistic_both_ways() -> None:
    # 2 texts x 2 videos, all scores equal: every ground truth ties with a wrong item -> rank 2, never 1
    m = text_video_metrics(torch.zeros(2, 2), torch.tensor([0, 1]))
    assert m["t2v/R@1"] == 0 and m["t2v/MdR"] == 2 and m["v2t/R@1"] == 0 and m["v2t/MnR"] == 2
    # one tie with a wrong video above the truth's level: rank 3 (the tied one and the higher one)
    scores = torch.tensor([[0.4, 0.7, 0.4, 0.1]])
    assert query_ranks(scores, torch.tensor([[True, False, False, False]])).tolist() == [3]


def test_metrics_msvd_like_many_captions_per_video() -> None:
    # 5 captions, 2 videos: captions 0-2 describe video 0, captions 3-4 describe video 1
    scores = torch.tensor([[0.9, 0.1],   # t2v rank 1
                           [0.2, 0.8],   # rank 2
                           [0.6, 0.6],   # tie -> rank 2
                           [0.3, 0.4],   # rank 1
                           [0.5, 0.2]])  # rank 2
    m = text_video_metrics(scores, torch.tensor([0, 0, 0, 1, 1]))
    assert m["t2v/R@1"] == pytest.approx(40) and m["t2v/MdR"] == 2 and m["t2v/MnR"] == pytest.approx(1.6)
    # v2t: video 0's best caption scores 0.9, nothing of video 1's captions (0.3, 0.5) above -> rank 1.
    # video 1's best caption scores 0.4; captions 0 (0.1 no), 1 (0.8 yes), 2 (0.6 yes) above -> rank 3.
    assert m["v2t/R@1"] == 50 and m["v2t/R@5"] == 100 and m["v2t/MnR"] == 2 and m["v2t/MdR"] == 2  # (1 + 3) / 2


def test_metrics_didemo_paragraph_one_text_per_video() -> None:
    # one paragraph per video: a square problem, both directions on the same diagonal
    scores = torch.tensor([[0.9, 0.5, 0.1],
                           [0.8, 0.6, 0.2],
                           [0.1, 0.2, 0.3]])
    m = text_video_metrics(scores, torch.arange(3))
    assert m["t2v/R@1"] == pytest.approx(200 / 3) and m["t2v/MnR"] == pytest.approx(4 / 3)
    # v2t: video 0 -> paragraph 0 (0.9) first; video 1 -> paragraph 1 (0.6) first; video 2 -> 0.3 first
    assert m["v2t/R@1"] == 100 and m["v2t/MdR"] == 1


def test_metrics_recall_at_k_beyond_the_gallery() -> None:
    m = text_video_metrics(torch.tensor([[0.1, 0.9], [0.9, 0.1]]), torch.tensor([0, 1]))  # both rank 2 of 2
    assert m["t2v/R@1"] == 0 and m["t2v/R@5"] == 100 and m["t2v/R@10"] == 100 and m["t2v/MdR"] == 2


def test_metrics_names_carry_split_and_clip_count() -> None:
    m = named(two_way_metrics(torch.eye(2), torch.eye(2), torch.eye(2, dtype=torch.bool)), "msrvtt_1ka", 16, "rerank")
    assert m["msrvtt_1ka/rerank/t2v/R@1@16clips"] == 100 and "msrvtt_1ka/rerank/v2t/MnR@16clips" in m
    assert metric_key("msrvtt_qa_test", "qa/acc", 16) == "msrvtt_qa_test/qa/acc@16clips"
    assert metric_key("", "t2v/R@1") == "t2v/R@1"  # the pre-training evaluation keeps its plain names
    assert metric_key("didemo_test", "num_videos") == "didemo_test/num_videos"


def test_metrics_qa_accuracy_counts_out_of_vocabulary_as_wrong() -> None:
    predictions = torch.tensor([3, 1, 0, 2, 0])
    labels = torch.tensor([3, 1, -1, 0, 0])  # the -1 answer is outside the vocabulary: wrong, still counted
    types = ["what color", "what color", "which direction", "which direction", "what shape"]
    m = qa_accuracy(predictions, labels, types)
    assert m["acc"] == pytest.approx(60)
    assert m["acc_what color"] == 100 and m["acc_which direction"] == 0 and m["acc_what shape"] == 100
    assert qa_accuracy(torch.tensor([-1]), torch.tensor([-1]))["acc"] == 0  # -1 == -1 is still wrong
    with pytest.raises(ValueError, match="2 question types for 5"):
        qa_accuracy(predictions, labels, types[:2])


def test_metrics_multi_choice_accuracy() -> None:
    labels = torch.tensor([0, 0, 1, 0, 0,  1, 0, 0, 0, 0,  0, 0, 0, 0, 1])
    scores = torch.tensor([0.1, 0.2, 0.9, 0.3, 0.0,   # right option best -> right
                           0.5, 0.5, 0.1, 0.1, 0.1,   # tie with a wrong option -> wrong (pessimistic)
                           0.9, 0.1, 0.1, 0.1, 0.2])  # a wrong option best -> wrong
    correct = choice_correct(scores, labels)
    assert correct.tolist() == [True, False, False] and choice_accuracy(correct) == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="exactly one right option"):
        choice_correct(scores, torch.zeros(15, dtype=torch.long))


def _scorer(table: dict[tuple[int, int], float], calls: list):
    def score(texts: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
        calls.extend(zip(texts.tolist(), videos.tolist()))
        return torch.tensor([table.get((t, v), 0.0) for t, v in zip(texts.tolist(), videos.tolist())])
    return score


def test_metrics_rerank_reorders_only_within_top_k() -> None:
    # text 0's truth is video 2, ranked 3rd by the dual encoder; the fusion scorer likes it best among the
    # top 3, and likes video 3 even more, but video 3 is outside every top-k tried here (dual rank 4).
    dual = torch.tensor([[0.9, 0.8, 0.7, 0.1],
                         [0.1, 0.2, 0.3, 0.9]])  # text 1's truth: video 3, already first
    truth = torch.tensor([[False, False, True, False], [False, False, False, True]])
    fusion = {(0, 0): 0.1, (0, 1): 0.2, (0, 2): 0.9, (0, 3): 5.0, (1, 3): 1.0, (1, 2): 0.5, (1, 1): 0.4}
    assert query_ranks(dual, truth).tolist() == [3, 1]
    calls: list = []
    k3 = rerank(dual, 3, _scorer(fusion, calls))
    assert query_ranks(k3.t2v, truth).tolist() == [1, 1]  # promoted from rank 3 to 1
    assert (0, 3) not in calls or k3.t2v[0, 3] < k3.t2v[0, 2]  # video 3 may be scored for v2t, never jumps in
    assert k3.t2v[0].argsort(descending=True).tolist() == [2, 1, 0, 3]
    k2 = rerank(dual, 2, _scorer(fusion, []))
    assert query_ranks(k2.t2v, truth).tolist() == [3, 1]  # outside the top 2: fusion cannot reach it
    assert k2.t2v[0].argsort(descending=True)[:2].tolist() == [1, 0]  # the top 2 re-ordered by fusion


def test_metrics_rerank_joint_orders_top_k_by_dual_plus_fusion() -> None:
    dual = torch.tensor([[3.0, 2.0, 1.0, 0.0]])  # one text; video 1 is its truth
    truth = torch.tensor([[False, True, False, False]])
    fusion = {(0, 0): 0.0, (0, 1): 0.5, (0, 2): 5.0, (0, 3): 9.0}
    out = rerank(dual, 3, _scorer(fusion, []))
    assert out.t2v[0].argsort(descending=True).tolist() == [2, 1, 0, 3]  # fusion alone: 5 > 0.5 > 0
    assert out.joint_t2v[0].argsort(descending=True).tolist() == [2, 0, 1, 3]  # 6 > 3 > 2.5; 3 stays out
    assert query_ranks(out.joint_t2v, truth).tolist() == [3]
    weak = rerank(dual, 3, _scorer({(0, 0): 0.0, (0, 1): 1.5, (0, 2): 0.0, (0, 3): 0.0}, []))
    assert query_ranks(weak.joint_t2v, truth).tolist() == [1]  # 3.5 > 3: a weak fusion vote tips a near tie
    assert torch.isfinite(out.joint_v2t).all()


def test_metrics_rerank_video_queries_and_exhaustive() -> None:
    dual = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])  # 3 texts, 2 videos; text 2 describes video 1
    truth = torch.tensor([[True, False], [True, False], [False, True]])
    fusion = {(0, 0): 1.0, (1, 0): 2.0, (2, 0): 0.0, (0, 1): 0.0, (1, 1): 0.0, (2, 1): 3.0}
    out = rerank(dual, 1, _scorer(fusion, []))
    # v2t top-1: video 0 -> text 0 (0.9), video 1 -> text 2 (0.3): ranks 1, 1 before and after
    assert query_ranks(out.v2t, truth.T).tolist() == [1, 1]
    assert out.pairs == 4  # t2v top-1: (0,0) (1,0) (2,0); v2t top-1 adds (2,1)
    full = fusion_matrix(3, 2, _scorer(fusion, []))
    assert full.tolist() == [[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]
    assert topk_mask(dual, 5).all()  # k beyond the gallery keeps everything
    chosen = torch.tensor([[True, False, False]])
    kept = rerank_matrix(torch.tensor([[0.5, 0.9, 0.1]]), torch.tensor([[-7.0, float("nan"), float("nan")]]), chosen)
    assert kept.argsort(descending=True).tolist() == [[0, 1, 2]]  # the rest stays in dual order below
