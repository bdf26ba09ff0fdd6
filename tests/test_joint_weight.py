"""The joint score's weight (evaluation/joint_weight.py): dual + w * fusion from saved scores, and the weight a
validation split chooses, on hand-built scores whose best weight is known."""

from __future__ import annotations

import pytest
import torch

from snps3_ds.evaluation.fusion import rerank, rerank_matrix, topk_mask
from snps3_ds.evaluation.joint_weight import WEIGHTS, choice_weight, choose_weight, retrieval_weight
from snps3_ds.evaluation.mcqa import weighted_correct


def _lookup(matrix: torch.Tensor):
    return lambda texts, videos: matrix[texts, videos]


def test_joint_weight_ties_go_to_the_earlier_weight_and_an_empty_grid_is_refused() -> None:
    assert choose_weight(lambda w: (1.0,)) == WEIGHTS[0] == 1.0
    assert choose_weight(lambda w: (float(w < 0.3),)) == 0.25  # 0.25 comes before 0.125 and 0 in WEIGHTS
    assert 0.0 in WEIGHTS  # the dual encoder's own order can always be chosen
    with pytest.raises(ValueError, match="no weights"):
        choose_weight(lambda w: (0.0,), [])


def test_joint_weight_weighted_rerank_is_the_joint_at_one_and_the_dual_order_at_zero() -> None:
    torch.manual_seed(0)
    dual, fusion = torch.randn(6, 5), torch.randn(6, 5)
    reranked = rerank(dual, 3, _lookup(fusion))
    t2v, v2t = reranked.weighted(1.0)
    joint = dual + fusion  # the plain sum, each direction's own top 3
    assert torch.equal(t2v, rerank_matrix(dual, joint, topk_mask(dual, 3)))
    assert torch.equal(v2t, rerank_matrix(dual.T, joint.T, topk_mask(dual.T, 3)))
    assert torch.equal(t2v, reranked.joint_t2v) and torch.equal(v2t, reranked.joint_v2t)
    t2v0, _ = reranked.weighted(0.0)
    for row in range(6):  # the same order as the dual encoder's
        assert torch.equal(t2v0[row].argsort(descending=True), dual[row].argsort(descending=True))


def test_joint_weight_retrieval_chooses_the_only_weight_that_gets_every_text_right() -> None:
    # text 0 (right: video 0) needs 5w > 1, text 1 (right: video 1) needs 1 > 3w: only w in (0.2, 1/3) gets both
    dual = torch.tensor([[0.0, 1.0, -5.0], [-5.0, 1.0, 0.0]])
    fusion = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    truth = torch.tensor([[True, False, False], [False, True, False]])
    reranked = rerank(dual, 3, _lookup(fusion))
    assert retrieval_weight(reranked, truth) == 0.25
    assert retrieval_weight(reranked, truth, weights=(1.0, 0.0)) == 1.0  # a tie on R@1 (50 each): the earlier


def test_joint_weight_multi_choice_counts_ties_against_and_chooses_on_accuracy() -> None:
    records = [{"answer": 0, "dual": [0.0, 1.0, 0.0, 0.0, 0.0], "fusion": [2.0, 0.0, 0.0, 0.0, 0.0]},
               {"answer": 2, "dual": [0.0, 0.0, 1.0, 0.0, 0.0], "fusion": [0.0, 1.5, 0.0, 0.0, 0.0]}]
    # question 0 needs 2w > 1, question 1 needs 1 > 1.5w: w in (0.5, 2/3) gets both, none of the grid does
    assert weighted_correct(records, 1.0).tolist() == [True, False]
    assert weighted_correct(records, 0.0).tolist() == [False, True]
    assert weighted_correct(records, 0.5).tolist() == [False, True]  # 2 * 0.5 = 1: a tie counts against
    assert choice_weight(records) == 1.0  # 50% each for 1, 0.5 and 0: the earliest
    assert choice_weight(records, weights=(1.0, 0.6)) == 0.6
