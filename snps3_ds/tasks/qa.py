"""Open-ended video QA: `[CLS] question [SEP] | clips [SEP]` -> cross_pooler -> classifier over the answers.

The classifier is new at fine-tuning time and lives on the task, not on the SNPModel, so the model keeps
the pre-trained architecture (and its checkpoints load unchanged) while the task's state dict carries both
(`model.*` and `head.*`). DESIGN §4.4 / REFERENCE §5.2: a Linear(H, answers) with no dropout; an MLP head
is an option. Labels of -1 (answer outside the vocabulary) take no loss; accuracy counts them as wrong.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.models.heads import in_fp32
from snps3_ds.models.snp import SNPModel
from snps3_ds.tasks.base import TaskOutput

HEAD_PREFIX = "head."  # the new parameters (for a separate learning rate and for loading)


def answer_head(hidden: int, num_answers: int, kind: Literal["linear", "mlp"] = "linear",
                dropout: float = 0.0) -> nn.Module:
    """linear: the reference's Linear(H, A). mlp: Linear(H, 2H)-GELU-LayerNorm-Dropout-Linear(2H, A), the
    ClipBERT/ALPRO-style head that some follow-ups use with small answer sets."""
    if num_answers < 1:
        raise ValueError(f"QA needs at least one answer class, got num_answers={num_answers}")
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_answers))
    if kind == "mlp":
        return nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.LayerNorm(2 * hidden),
                             nn.Dropout(dropout), nn.Linear(2 * hidden, num_answers))
    raise ValueError(f"QA head kind: expected 'linear' or 'mlp', got {kind!r}")


class QATask(nn.Module):
    """Cross-entropy over the answer vocabulary on the fusion pass; metric qa_acc (percent)."""

    def __init__(self, model: SNPModel, num_answers: int, head: Literal["linear", "mlp"] = "linear",
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.num_answers = num_answers
        self.head = answer_head(model.hidden_size, num_answers, head, dropout)

    def logits(self, batch: VideoTextBatch) -> torch.Tensor:
        """Answer logits [N, A] in fp32, one row per question (several questions may share a video)."""
        video = self.model.encode_video(batch.frames, batch.clip_mask)
        owners = batch.text_video_index
        fused = self.model.fuse(batch.text_ids, batch.text_mask, video.tokens[owners], batch.clip_mask[owners])
        return in_fp32(self.head, fused.pooled)

    def forward(self, batch: VideoTextBatch) -> TaskOutput:
        if batch.text_labels is None:
            raise ValueError("QATask needs batch.text_labels (answer ids): build the loader with "
                             "texts=task_texts(<qa annotation>, train=True)")
        logits = self.logits(batch)
        labels = batch.text_labels.to(logits.device)
        known = labels >= 0
        if known.any():
            loss = F.cross_entropy(logits[known], labels[known])
        else:  # every question out of vocabulary: no signal, but keep the graph for the engine
            loss = logits.sum() * 0.0
        correct = (logits.argmax(dim=-1) == labels) & known
        accuracy = correct.float().mean().detach() * 100
        return TaskOutput(loss, {"qa": loss.detach()}, {"qa_acc": accuracy})


def head_parameter_names(task: QATask) -> set[str]:
    """Names (in the task's namespace) of the new classifier's parameters, e.g. for their own learning rate."""
    return {name for name, _ in task.named_parameters() if name.startswith(HEAD_PREFIX)}
