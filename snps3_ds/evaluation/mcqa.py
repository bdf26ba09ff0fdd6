"""Multi-choice QA evaluation: the best of each question's options under the fusion scorer (the paper's
zero-shot protocol from a retrieval model) and, as second and third readings, under the dual encoder and
under the joint score dual + fusion logit (as the joint re-ranking in evaluation/fusion.py).

The eval loader carries each question's options as consecutive texts of its video with labels 1/0
(snps3_ds.downstream.texts). Each rank scores its part; per-question records are gathered and sorted by
(video key, question order), so 1 and N ranks report the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.distributed import gather_objects
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.features import eval_mode, labelled_batches, text_order
from snps3_ds.evaluation.metrics import choice_accuracy, metric_key
from snps3_ds.models.snp import SNPModel
from snps3_ds.ranking import require_finite
from snps3_ds.tasks.mcqa import choice_correct, option_scores

OPTIONS = 5


@dataclass
class MCResult:
    metrics: dict[str, float]
    records: list[dict]  # per question: video, question, right (fusion), right_dual, right_joint, choice (fusion),
    # answer (the right option's index), dual and fusion (the options' scores)


def score_questions(model: SNPModel, batches: Iterable[VideoTextBatch], temperature: float,
                    ctx: EvalContext = EvalContext(), options: int = OPTIONS) -> list[dict]:
    """This rank's questions, one record each."""
    records = []
    with eval_mode(model):
        for batch in labelled_batches(batches, ctx, "multi-choice evaluation"):
            scores = option_scores(model, batch, temperature)
            labels = batch.text_labels.cpu()
            fusion, dual = scores.fusion.cpu(), scores.dual.cpu()
            require_finite(fusion, "multi-choice fusion scores")
            require_finite(dual, "multi-choice dual-encoder scores")
            right = choice_correct(fusion, labels, options).tolist()
            right_dual = choice_correct(dual, labels, options).tolist()
            right_joint = choice_correct(dual + fusion, labels, options).tolist()
            choice = fusion.view(-1, options).argmax(dim=1).tolist()
            answers = labels.view(-1, options).argmax(dim=1).tolist()
            duals, fusions = dual.float().view(-1, options).tolist(), fusion.float().view(-1, options).tolist()
            owners = batch.text_video_index.cpu()
            orders = text_order(owners)
            for q in range(len(right)):  # the first option of question q is text q * options
                first = q * options
                records.append({"video": batch.keys[int(owners[first])], "question": int(orders[first]) // options,
                                "right": right[q], "right_dual": right_dual[q], "right_joint": right_joint[q],
                                "choice": choice[q], "answer": answers[q], "dual": duals[q], "fusion": fusions[q]})
    return records


def weighted_correct(records: list[dict], weight: float, options: int = OPTIONS) -> torch.Tensor:
    """One bool per record: is its right option the best under dual + weight * fusion (ties count against)."""
    dual = torch.tensor([r["dual"] for r in records], dtype=torch.float32)
    fusion = torch.tensor([r["fusion"] for r in records], dtype=torch.float32)
    labels = torch.zeros_like(dual, dtype=torch.long)
    labels[torch.arange(len(records)), torch.tensor([r["answer"] for r in records])] = 1
    return choice_correct((dual + weight * fusion).flatten(), labels.flatten(), options)


def evaluate_mcqa(model: SNPModel, batches: Iterable[VideoTextBatch], temperature: float, split: str,
                  num_clips: int | None, ctx: EvalContext = EvalContext(),
                  joint_weight: float | None = None) -> MCResult:
    """`<split>/mc/acc@<clips>clips` (fusion), `mc/acc_dual@..`, `mc/acc_joint@..` and the question count;
    with a joint_weight also `mc/acc_weighted@..` (dual + joint_weight * fusion) and `mc/weight`.
    Call on every rank; every rank gets the same result."""
    local = score_questions(model, batches, temperature, ctx)
    records = sorted((r for part in gather_objects(local, ctx.world_size) for r in part),
                     key=lambda r: (r["video"], r["question"]))
    if not records:
        raise ValueError(f"multi-choice split {split!r}: the evaluation stream yielded no question (do the "
                         "annotation's video keys match the shards' __key__s?)")
    metrics = {
        metric_key(split, "mc/acc", num_clips): choice_accuracy(torch.tensor([r["right"] for r in records])),
        metric_key(split, "mc/acc_dual", num_clips): choice_accuracy(torch.tensor([r["right_dual"] for r in records])),
        metric_key(split, "mc/acc_joint", num_clips):
            choice_accuracy(torch.tensor([r["right_joint"] for r in records])),
        metric_key(split, "mc/num_questions"): float(len(records)),
    }
    if joint_weight is not None:
        metrics[metric_key(split, "mc/acc_weighted", num_clips)] = choice_accuracy(weighted_correct(records,
                                                                                                   joint_weight))
        metrics[metric_key(split, "mc/weight")] = float(joint_weight)
    return MCResult(metrics, records)
