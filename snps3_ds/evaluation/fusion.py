"""Fusion (level-2) scoring at evaluation: re-ranking the dual encoder's top-k, or all pairs exhaustively.

The dual encoder ranks every text-video pair cheaply; the fusion pass (cross-encoder + similarity_dense)
is far more expensive, so by default it only re-orders each query's top-k candidates (DESIGN §4.4). The
reference scores all N x M pairs; `fusion_matrix` does that for faithfulness. Re-ranking reports two
orders of the top-k: by the fusion logit alone (the paper's protocol) and by the joint score, dual + fusion
logit (ALBEF's and BLIP's re-ranking: both are logits of softmax objectives, so their sum is a product of
the two experts and the dual encoder's evidence is kept instead of replaced); `Reranked.weighted` gives
dual + w * fusion for the weight a validation split chose (evaluation/joint_weight.py). Pairs are cut into fixed
chunks and chunk c is scored by rank c % world_size, so each chunk holds the same pairs whatever the world
size and 2 ranks reproduce 1 rank's scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from snps3_ds.distributed import gather_objects
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.features import EvalFeatures, eval_mode
from snps3_ds.models.snp import SNPModel

PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(text indices [P], video indices [P]) -> one score per pair [P] (fp32, CPU), on every rank."""


class FusionScorer:
    """Level-2 logits of (text, video) pairs named by their index in gathered EvalFeatures."""

    def __init__(self, model: SNPModel, feats: EvalFeatures, ctx: EvalContext, chunk: int = 256) -> None:
        if feats.clip_tokens is None:
            raise ValueError("fusion scoring needs the clip tokens: collect features with keep_tokens=True")
        self.model, self.feats, self.device = model, feats, ctx.device
        self.rank, self.world_size, self.chunk = ctx.rank, ctx.world_size, chunk

    def __call__(self, texts: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
        mine: dict[int, torch.Tensor] = {}
        with eval_mode(self.model):
            for c, start in enumerate(range(0, len(texts), self.chunk)):
                if c % self.world_size == self.rank:
                    end = start + self.chunk
                    mine[start] = self._score(texts[start:end], videos[start:end])
        scores = torch.empty(len(texts))
        for part in gather_objects(mine, self.world_size):
            for start, values in part.items():
                scores[start:start + len(values)] = values
        return scores

    def _score(self, texts: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
        f, device = self.feats, self.device
        mask = f.text_mask[texts]
        length = max(1, int(mask.sum(dim=1).max()))  # drop the padding columns no text of the chunk uses
        fused = self.model.fuse(f.text_ids[texts, :length].to(device), mask[:, :length].to(device),
                                f.clip_tokens[videos].to(device), f.clip_mask[videos].to(device))
        return self.model.match_score(fused.pooled).float().cpu()


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """bool like scores [Q, G]: True at each row's k best columns (all of them when k >= G)."""
    k = min(k, scores.shape[1])
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    chosen.scatter_(1, scores.topk(k, dim=1).indices, True)
    return chosen


def rerank_matrix(dual: torch.Tensor, fusion: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Scores whose ranking is: chosen columns first, ordered by fusion; then the rest, in dual order.

    Non-chosen entries are shifted below the lowest chosen fusion score, so re-ranking can only re-order
    within each query's top-k and never pulls an item in from outside it.
    """
    if not chosen.any():
        return dual.clone()
    floor = fusion[chosen].min()
    below = dual - dual.max() + floor - 1.0
    return torch.where(chosen, fusion, below)


@dataclass
class Reranked:
    t2v: torch.Tensor  # [N, B] text queries over videos, top-k ordered by the fusion logit
    v2t: torch.Tensor  # [B, N] video queries over texts
    pairs: int  # fusion passes run (union of both directions' candidates)
    dual: torch.Tensor  # [N, B] fp32
    fusion: torch.Tensor  # [N, B] fp32, NaN outside both directions' candidates
    t2v_chosen: torch.Tensor  # bool [N, B]: each text's top-k videos
    v2t_chosen: torch.Tensor  # bool [N, B]: each video's top-k texts

    def weighted(self, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(t2v [N, B], v2t [B, N]) with each top-k ordered by dual + weight * fusion logit (weight 1: the
        joint order; 0: the dual encoder's own), from the scores already computed."""
        joint = self.dual + weight * self.fusion  # NaN outside the candidates, which rerank_matrix never reads
        return (rerank_matrix(self.dual, joint, self.t2v_chosen),
                rerank_matrix(self.dual.T, joint.T, self.v2t_chosen.T))

    @property
    def joint_t2v(self) -> torch.Tensor:
        """[N, B] top-k ordered by dual + fusion logit."""
        return self.weighted(1.0)[0]

    @property
    def joint_v2t(self) -> torch.Tensor:
        """[B, N] top-k ordered by dual + fusion logit."""
        return self.weighted(1.0)[1]


def rerank(dual: torch.Tensor, k: int, score_pairs: PairScorer) -> Reranked:
    """Re-rank each text's top-k videos and each video's top-k texts with the fusion scorer.

    dual [N, B]; the candidate pairs of both directions are scored once (their union, row-major order).
    """
    if k < 1:
        raise ValueError(f"re-ranking needs k >= 1, got {k}")
    t2v_chosen = topk_mask(dual, k)
    v2t_chosen = topk_mask(dual.T, k).T
    texts, videos = (t2v_chosen | v2t_chosen).nonzero(as_tuple=True)
    fusion = torch.full_like(dual, float("nan"), dtype=torch.float32)
    fusion[texts, videos] = score_pairs(texts, videos)
    dual = dual.float()
    return Reranked(rerank_matrix(dual, fusion, t2v_chosen), rerank_matrix(dual.T, fusion.T, v2t_chosen.T), len(texts),
                    dual, fusion, t2v_chosen, v2t_chosen)


def fusion_matrix(num_texts: int, num_videos: int, score_pairs: PairScorer) -> torch.Tensor:
    """The fusion score of every text-video pair [N, B] (the reference's exhaustive L2 similarity)."""
    texts = torch.arange(num_texts).repeat_interleave(num_videos)
    videos = torch.arange(num_videos).repeat(num_texts)
    return score_pairs(texts, videos).view(num_texts, num_videos)
