"""One annotation -> its protocol (retrieval, open-ended QA, multi-choice), for in-training validation and
for the final evaluation of a fine-tuning run. Collective: call on every rank; every rank gets the metrics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.downstream.annotations import Annotation
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.features import GroundTruth
from snps3_ds.evaluation.joint_weight import choice_weight, retrieval_weight
from snps3_ds.evaluation.mcqa import evaluate_mcqa
from snps3_ds.evaluation.qa import evaluate_qa
from snps3_ds.evaluation.retrieval import RetrievalOptions, run_retrieval
from snps3_ds.models.snp import SNPModel
from snps3_ds.tasks.qa import QATask


@dataclass
class DownstreamResult:
    metrics: dict[str, float]
    worst: list[dict]  # retrieval: the worst-ranked text queries; QA/MC: the wrongly answered questions
    best_weight: float | None = None  # retrieval with re-ranking, MC: the joint weight this split's scores prefer


def question_type_of(annotation: Annotation):
    """The items' own `type` (the demo's colour/direction/shape questions), else None."""
    if not all("type" in item for item in annotation.items):
        return None
    by_video = annotation.by_video()
    return lambda video, order: str(by_video[video][order]["type"])


@dataclass(frozen=True)
class DownstreamOptions:
    num_clips: int  # clips per video (metric names carry it)
    rerank_k: int = 0  # retrieval: fusion re-ranking of each query's top-k (0: off)
    exhaustive: bool = False  # retrieval: also fusion-score every pair
    ground_truth: GroundTruth = "string"  # retrieval: per caption string (the reference) or per instance
    joint_weights: dict[str, float] = field(default_factory=dict)  # per task (retrieval, mcqa): report the
    # joint score dual + w * fusion under this weight too (chosen on a validation split: joint_weight.py)
    choose_joint_weight: bool = False  # retrieval with re-ranking, MC: find this split's best weight (validation)


@torch.no_grad()
def evaluate_annotation(task: nn.Module, annotation: Annotation, batches: Iterable[VideoTextBatch],
                        options: DownstreamOptions, ctx: EvalContext = EvalContext()) -> DownstreamResult:
    """`task` is the trained task module; its `model` is the SNP model every protocol scores with."""
    model: SNPModel = task.model
    temperature = float(model.temperature())
    clips = options.num_clips
    if annotation.task == "retrieval":
        retrieval = RetrievalOptions(annotation.split, clips, options.rerank_k, options.exhaustive,
                                     ground_truth=options.ground_truth,
                                     joint_weight=options.joint_weights.get("retrieval"))
        result = run_retrieval(model, batches, temperature, retrieval, ctx)
        best = (retrieval_weight(result.reranked, result.truth)
                if options.choose_joint_weight and result.reranked is not None else None)
        return DownstreamResult(result.metrics, result.worst, best)
    if annotation.task == "qa":
        if not isinstance(task, QATask):
            raise ValueError(f"{annotation.source}: open-ended QA needs a QA task with its answer head")
        qa = evaluate_qa(task, batches, annotation.split, clips, ctx, question_type_of(annotation))
        return DownstreamResult(qa.metrics, [r for r in qa.records if r["prediction"] != r["label"]][:20])
    mc = evaluate_mcqa(model, batches, temperature, annotation.split, clips, ctx, options.joint_weights.get("mcqa"))
    best = choice_weight(mc.records) if options.choose_joint_weight else None
    return DownstreamResult(mc.metrics, [r for r in mc.records if not r["right"]][:20], best)
