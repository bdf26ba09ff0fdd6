"""Heads on top of the shared BERT.

Head logits are computed in fp32 whatever dtype the engine keeps the parameters in (DESIGN §4.3: losses,
logits and normalisation in fp32): a bf16 matching logit has 8 bits of mantissa, so the small score
differences a level-2 / VTM / MLM head starts from would round to ties. `in_fp32` runs a head module with
fp32 copies of its parameters; the copies are differentiable, so gradients reach the (bf16) parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def in_fp32(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """`module(inputs)` computed in fp32 (fp32 copies of its parameters and buffers, autocast off)."""
    tensors = {name: t.float() if t.is_floating_point() else t
               for name, t in [*module.named_parameters(), *module.named_buffers()]}
    with _no_autocast(inputs.device):
        return functional_call(module, tensors, (inputs.float(),))


class MLMHead(nn.Module):
    """BERT's MLM transform (dense, GELU, LayerNorm) and a decoder tied to the word embeddings, in fp32.

    The decoder matrix is passed in at call time rather than registered here, so the tie is the very
    same Parameter with no second state-dict entry for a ZeRO partitioner or a checkpoint loader to split.
    """

    def __init__(self, hidden: int, vocab_size: int, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        with _no_autocast(states.device):
            hidden = F.gelu(F.linear(states.float(), self.dense.weight.float(), self.dense.bias.float()))
            hidden = F.layer_norm(hidden, self.norm.normalized_shape, self.norm.weight.float(),
                                  self.norm.bias.float(), self.norm.eps)
            return F.linear(hidden, word_embeddings.float(), self.bias.float())


def similarity_dense(hidden: int, dropout: float = 0.1) -> nn.Sequential:
    """The fusion matching scorer (reference `similarity_dense`): Dropout-Linear(H, 2H)-ReLU-Linear(2H, 1)
    on the cross_pooler output; one raw logit per text-video pair."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, 1))
