"""Optional temporal encoder over a video's clip tokens (the reference's `with_temporal_encoder`, off there).

`[cls] v_1 .. v_T` + position and type embeddings, LayerNorm, then `layers` BERT layers; the outputs at
the clip positions replace the clip tokens. The paper's parameter counts (Table II) include a 3-layer one
(REFERENCE §1.5-1.6), so `model.temporal_layers=3` reproduces them; the released configs leave it off.

Built as a BertModel whose vocabulary has one entry: that word embedding is the learned cls token, so
the module is exactly "layers BERT layers + position/type embeddings + LayerNorm + cls token" and
reuses BERT's attention masking and gradient checkpointing.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel


class TemporalEncoder(nn.Module):
    def __init__(self, text_config: BertConfig, layers: int) -> None:
        super().__init__()
        config = BertConfig(**{**text_config.to_dict(), "vocab_size": 1, "num_hidden_layers": layers})
        self.bert = BertModel(config, add_pooling_layer=False)

    def init_from(self, text_bert: BertModel) -> None:
        """Start from the text BERT's position/type embeddings, LayerNorm and first layers (cls stays random)."""
        state = {k: v for k, v in text_bert.state_dict().items() if not k.startswith(("pooler.", "embeddings.word"))}
        own = self.bert.state_dict()
        self.bert.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)

    def forward(self, tokens: torch.Tensor, clip_mask: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, H], clip_mask [B, T] (True = real) -> contextualised tokens [B, T, H]."""
        cls = self.bert.embeddings.word_embeddings.weight[:1].expand(tokens.shape[0], 1, -1)
        embeds = torch.cat([cls.to(tokens.dtype), tokens], dim=1)
        mask = torch.cat([torch.ones_like(clip_mask[:, :1]), clip_mask], dim=1).long()
        out = self.bert(inputs_embeds=embeds, attention_mask=mask,
                        token_type_ids=torch.zeros_like(mask))
        return out.last_hidden_state[:, 1:]
