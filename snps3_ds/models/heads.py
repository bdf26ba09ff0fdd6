"""Heads on top of the shared BERT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLMHead(nn.Module):
    """BERT's MLM transform (dense, GELU, LayerNorm) and a decoder tied to the word embeddings.

    The decoder matrix is passed in at call time rather than registered here, so the tie is the very
    same Parameter with no second state-dict entry for a ZeRO partitioner or a checkpoint loader to split.
    """

    def __init__(self, hidden: int, vocab_size: int, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(F.gelu(self.dense(states)))
        return F.linear(hidden, word_embeddings, self.bias)


def similarity_dense(hidden: int, dropout: float = 0.1) -> nn.Sequential:
    """The fusion matching scorer (reference `similarity_dense`): Dropout-Linear(H, 2H)-ReLU-Linear(2H, 1)
    on the cross_pooler output; one raw logit per text-video pair."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, 1))
