"""Cross-modal masked language modelling on the fusion pass (fp32 loss)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from snps3_ds.data.text.tokens import IGNORE_INDEX
from snps3_ds.objectives import upcast


@dataclass
class MLMOutput:
    loss: torch.Tensor
    accuracy: torch.Tensor
    count: int


def masked_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean [N, L] of positions to predict; computing the head only there saves a vocab-sized matmul."""
    return labels != IGNORE_INDEX


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor, normaliser: float | None = None) -> MLMOutput:
    """Cross-entropy over masked positions' logits [M, V] and targets [M]: their mean, or their sum divided
    by `normaliser` (the masked tokens of a whole optimiser step, for a global mean); zero (with grad) when
    M == 0 so a batch whose captions drew no mask does not turn the step into NaN."""
    if targets.numel() == 0:
        zero = upcast(logits).sum() * 0.0
        return MLMOutput(zero, zero.detach(), 0)
    logits = upcast(logits)
    if normaliser is None:
        loss = F.cross_entropy(logits, targets)
    else:
        loss = F.cross_entropy(logits, targets, reduction="sum") / max(normaliser, 1.0)
    accuracy = (logits.argmax(-1) == targets).float().mean()
    return MLMOutput(loss, accuracy.detach(), int(targets.numel()))
