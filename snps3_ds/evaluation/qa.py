"""Open-ended video QA evaluation: accuracy over every question of the split, per question type optionally.

Each rank classifies the questions of its part of the stream; the per-question records are gathered and
sorted by (video key, question order), so 1 and N ranks report the same figures. Labels of -1 (answers
outside the training vocabulary) count as wrong (metrics.qa_accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.distributed import gather_objects
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.features import eval_mode, labelled_batches, text_order
from snps3_ds.evaluation.metrics import metric_key, named, qa_accuracy
from snps3_ds.ranking import require_finite
from snps3_ds.tasks.qa import QATask

QuestionType = Callable[[str, int], str]
"""(video key, question order within the video) -> question type, e.g. its first words."""


@dataclass
class QAResult:
    metrics: dict[str, float]
    records: list[dict]  # per question: video, order, label, prediction (sorted by video, order)


def predict_questions(task: QATask, batches: Iterable[VideoTextBatch], ctx: EvalContext) -> list[dict]:
    """This rank's predictions, one record per question."""
    records = []
    with eval_mode(task):
        for batch in labelled_batches(batches, ctx, "QA evaluation"):
            logits = task.logits(batch)
            require_finite(logits, "QA answer logits")
            predictions = logits.argmax(dim=-1).cpu().tolist()
            owners, labels = batch.text_video_index.cpu(), batch.text_labels.cpu().tolist()
            for i, (owner, order) in enumerate(zip(owners.tolist(), text_order(owners).tolist())):
                records.append({"video": batch.keys[owner], "order": order, "label": labels[i],
                                "prediction": predictions[i]})
    return records


def evaluate_qa(task: QATask, batches: Iterable[VideoTextBatch], split: str, num_clips: int | None,
                ctx: EvalContext = EvalContext(), question_type: QuestionType | None = None) -> QAResult:
    """`<split>/qa/acc@<clips>clips` (+ `acc_<type>` per question type) and the question count.
    Call on every rank (the records are gathered); every rank gets the same result."""
    local = predict_questions(task, batches, ctx)
    records = sorted((r for part in gather_objects(local, ctx.world_size) for r in part),
                     key=lambda r: (r["video"], r["order"]))
    if not records:
        raise ValueError(f"QA split {split!r}: the evaluation stream yielded no question (do the annotation's "
                         "video keys match the shards' __key__s?)")
    types = [question_type(r["video"], r["order"]) for r in records] if question_type else None
    accuracy = qa_accuracy(torch.tensor([r["prediction"] for r in records]),
                           torch.tensor([r["label"] for r in records]), types)
    metrics = named(accuracy, split, num_clips, "qa")
    metrics[metric_key(split, "qa/num_questions")] = float(len(records))
    return QAResult(metrics, records)
