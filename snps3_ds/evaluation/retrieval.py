"""Text-video retrieval evaluation: dual-encoder similarity for all pairs, optional fusion re-ranking of
the top-k (or exhaustive fusion scoring of every pair), metrics both ways, and the worst-ranked queries.

Distributed: each rank extracts features of its part of the stream, the features are gathered and sorted
(features.py), every rank computes the same dual matrix, and the fusion passes are split across ranks
(fusion.py). With world_size 1 nothing is communicated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.features import EvalFeatures, GroundTruth, collect_features
from snps3_ds.evaluation.fusion import FusionScorer, Reranked, fusion_matrix, rerank
from snps3_ds.evaluation.metrics import metric_key, named, query_ranks, two_way_metrics
from snps3_ds.models.snp import SNPModel
from snps3_ds.objectives.contrastive import text_video_scores

TextOf = Callable[[EvalFeatures, int], str]
"""(features, text index) -> the text itself (for the worst-query table and the embedding export)."""


@dataclass
class RetrievalOptions:
    split: str = ""  # metric prefix (an annotation's split); "" for the pre-training evaluation
    num_clips: int | None = None  # written into metric names when set
    rerank_k: int = 0  # re-rank each query's top-k with the fusion scorer (0: off)
    exhaustive: bool = False  # fusion-score all N x M pairs as the reference does
    chunk: int = 256  # pairs per fusion forward
    worst: int = 20  # worst-ranked text queries to report
    ground_truth: GroundTruth = "string"  # per caption string (the reference) or per caption instance
    joint_weight: float | None = None  # with rerank_k: also report rerank_weighted, dual + w * fusion


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    worst: list[dict] = field(default_factory=list)  # text, video (truth), rank, top1 under the headline
    # scores: re-ranked when rerank_k > 0, else exhaustive fusion when on, else dual
    features: EvalFeatures | None = None
    scores: torch.Tensor | None = None  # the headline text->video scores [N, B] (the gallery reads its top-k)
    truth: torch.Tensor | None = None  # bool [N, B] under options.ground_truth
    similarity: str = "dual"  # which scores are the headline: dual | fusion | rerank
    reranked: Reranked | None = None  # with rerank_k: every re-ranked order's scores


def dual_scores(feats: EvalFeatures, temperature: float, block: int = 1024) -> torch.Tensor:
    """Dual-encoder score of every text-video pair [N, B]: logsumexp over clips of cos / T, as in
    training; computed in blocks of texts so the [N, B, T] logits never exist at once."""
    rows = [text_video_scores(feats.text_features[i:i + block], feats.clip_features, feats.clip_mask, temperature)
            for i in range(0, feats.num_texts, block)]
    return torch.cat(rows)


def score_retrieval(model: SNPModel, feats: EvalFeatures, temperature: float, options: RetrievalOptions,
                    ctx: EvalContext = EvalContext(), text_of: TextOf | None = None) -> RetrievalResult:
    """Metrics of gathered features; every rank must call it (the fusion passes are collective)."""
    truth = feats.truth(options.ground_truth)
    dual = dual_scores(feats, temperature)
    metrics = named(two_way_metrics(dual, dual.T, truth), options.split, options.num_clips)
    headline, variant = dual, "dual"
    scorer, reranked = None, None
    if options.rerank_k > 0 or options.exhaustive:
        scorer = FusionScorer(model, feats, ctx, options.chunk)
    if options.exhaustive:
        fusion = fusion_matrix(feats.num_texts, feats.num_videos, scorer)
        metrics.update(named(two_way_metrics(fusion, fusion.T, truth), options.split, options.num_clips, "fusion"))
        headline, variant = fusion, "fusion"
        scorer = lambda texts, videos: fusion[texts, videos]  # noqa: E731 (re-ranking reads the full matrix)
    if options.rerank_k > 0:
        reranked = rerank(dual, options.rerank_k, scorer)
        metrics.update(named(two_way_metrics(reranked.t2v, reranked.v2t, truth), options.split, options.num_clips,
                             "rerank"))
        metrics.update(named(two_way_metrics(*reranked.weighted(1.0), truth), options.split, options.num_clips,
                             "rerank_joint"))
        metrics[metric_key(options.split, "rerank/k")] = float(options.rerank_k)
        if options.joint_weight is not None:
            metrics.update(named(two_way_metrics(*reranked.weighted(options.joint_weight), truth), options.split,
                                 options.num_clips, "rerank_weighted"))
            metrics[metric_key(options.split, "rerank_weighted/weight")] = float(options.joint_weight)
        headline, variant = reranked.t2v, "rerank"
    metrics[metric_key(options.split, "num_videos")] = float(feats.num_videos)
    metrics[metric_key(options.split, "num_texts")] = float(feats.num_texts)
    metrics[metric_key(options.split, "chance_R@1")] = 100.0 / feats.num_videos  # one right video per text
    metrics[metric_key(options.split, f"ground_truth/{options.ground_truth}")] = 1.0  # which protocol this is
    worst = worst_queries(headline, feats, options.worst, text_of, variant, truth)
    return RetrievalResult(metrics, worst, feats, headline, truth, variant, reranked)


def worst_queries(scores: torch.Tensor, feats: EvalFeatures, count: int, text_of: TextOf | None = None,
                  similarity: str = "dual", truth: torch.Tensor | None = None) -> list[dict]:
    """The `count` text queries whose ground-truth video ranks lowest (ties: earlier query first);
    `truth` defaults to feats.truth()."""
    if count <= 0:
        return []
    ranks = query_ranks(scores, feats.truth() if truth is None else truth)
    return query_rows(scores, feats, worst_order(ranks, count), ranks, text_of, similarity)


def worst_order(ranks: torch.Tensor, count: int) -> list[int]:
    """Indices of the `count` queries ranked lowest, worst first (ties: earlier query first)."""
    return sorted(range(len(ranks)), key=lambda i: (-int(ranks[i]), i))[:count]


def query_rows(scores: torch.Tensor, feats: EvalFeatures, queries: list[int], ranks: torch.Tensor,
               text_of: TextOf | None = None, similarity: str = "dual", top: int = 1) -> list[dict]:
    """One row per text query: similarity, text, video (its own), rank, top1, and with top > 1 `top`, the
    keys of its `top` best-scoring videos, best first (ties: lower video index first, as argmax)."""
    top1 = scores.argmax(dim=1)
    rows = []
    for i in queries:
        video = feats.keys[int(feats.text_video[i])]
        text = text_of(feats, i) if text_of is not None else f"{video}#{int(feats.text_order[i])}"
        row = {"similarity": similarity, "text": text, "video": video, "rank": int(ranks[i]),
               "top1": feats.keys[int(top1[i])]}
        if top > 1:
            order = torch.sort(scores[i], descending=True, stable=True).indices[:top]
            row["top"] = [feats.keys[int(j)] for j in order]
        rows.append(row)
    return rows


def run_retrieval(model: SNPModel, batches: Iterable[VideoTextBatch], temperature: float,
                  options: RetrievalOptions | None = None, ctx: EvalContext = EvalContext(),
                  text_of: TextOf | None = None) -> RetrievalResult:
    """Extract (this rank's part), gather, score. Call on every rank; every rank gets the same result."""
    options = options or RetrievalOptions()
    keep_tokens = options.rerank_k > 0 or options.exhaustive
    feats = collect_features(model, batches, ctx, keep_tokens)
    return score_retrieval(model, feats, temperature, options, ctx, text_of)
