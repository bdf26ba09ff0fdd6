"""The SNP model: visual clip tokens plus ONE BERT that serves both the text pass and the fusion pass.

Single-device model code: it knows nothing of DeepSpeed, ranks or precision (DESIGN §4.1-4.2).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from snps3_ds.config import ModelConfig
from snps3_ds.local_files import resolve_text_dir
from snps3_ds.models.heads import MLMHead
from snps3_ds.models.visual import VisualEncoder


@dataclass
class TextFeatures:
    states: torch.Tensor  # [N, L, H] token states of the text pass
    global_feature: torch.Tensor  # [N, H] L2-normalised pooled [CLS]


@dataclass
class VideoFeatures:
    tokens: torch.Tensor  # [B, T, H] one raw pooled token per clip: the fusion input
    clip_features: torch.Tensor  # [B, T, H] L2-normalised img_fc(tokens): the contrastive feature
    clip_mask: torch.Tensor  # [B, T] True for real clips


@dataclass
class FusionOutput:
    text_states: torch.Tensor  # [N, L, H] fusion-pass states of the caption tokens
    pooled: torch.Tensor  # [N, H] cross_pooler(fusion [CLS])


def build_bert(cfg: ModelConfig) -> BertModel:
    """The packaged/local pretrained BERT, or a random-init one of the shape in cfg.text_config."""
    if cfg.text_config is not None:
        return BertModel(BertConfig(**cfg.text_config), add_pooling_layer=True)
    return BertModel.from_pretrained(str(resolve_text_dir(cfg.text_model)), local_files_only=True,
                                     add_pooling_layer=True)


class SNPModel(nn.Module):
    """Shared Network Pre-training: BERT embeds and encodes captions alone (text pass) and captions
    followed by clip tokens (fusion pass) with the same embeddings and layers; only the pooler is copied."""

    def __init__(self, cfg: ModelConfig, sep_token_id: int) -> None:
        super().__init__()
        self.bert = build_bert(cfg)
        hidden = self.bert.config.hidden_size
        self.visual = VisualEncoder(cfg.visual_backbone, hidden, cfg.visual_checkpoint)
        self.img_fc = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.cross_pooler = copy.deepcopy(self.bert.pooler)
        self.mlm_head = MLMHead(hidden, self.bert.config.vocab_size, self.bert.config.layer_norm_eps)
        self.register_buffer("sep_id", torch.tensor([sep_token_id]), persistent=False)

    @property
    def hidden_size(self) -> int:
        return self.bert.config.hidden_size

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> TextFeatures:
        out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
        return TextFeatures(out.last_hidden_state, F.normalize(out.pooler_output.float(), dim=-1))

    def encode_video(self, frames: torch.Tensor, clip_mask: torch.Tensor) -> VideoFeatures:
        grid = self.visual(frames)  # [B, T, H, h, w]
        tokens = grid.mean(dim=(-2, -1))
        features = F.normalize(self.img_fc(tokens).float(), dim=-1)
        return VideoFeatures(tokens, features, clip_mask)

    def fuse(self, ids: torch.Tensor, mask: torch.Tensor, clip_tokens: torch.Tensor,
             clip_mask: torch.Tensor) -> FusionOutput:
        """`[CLS] caption [SEP] pad | v_1 .. v_T [SEP]` through the shared embeddings and layers.

        Captions keep token type 0 and positions 0..L-1; the visual part has type 1 and positions
        restarting at 0, as in the reference. Attention is bidirectional over both parts.
        """
        count, length = ids.shape
        clips = clip_tokens.shape[1]
        words = self.bert.embeddings.word_embeddings
        sep = words(self.sep_id).expand(count, 1, -1)
        embeds = torch.cat([words(ids), clip_tokens.to(sep.dtype), sep], dim=1)
        device = ids.device
        positions = torch.cat([torch.arange(length, device=device), torch.arange(clips + 1, device=device)])
        types = torch.cat([torch.zeros(length, device=device), torch.ones(clips + 1, device=device)]).long()
        attention = torch.cat([mask, clip_mask.to(mask.dtype), torch.ones_like(mask[:, :1])], dim=1)
        out = self.bert(inputs_embeds=embeds, attention_mask=attention,
                        position_ids=positions.expand(count, -1), token_type_ids=types.expand(count, -1))
        states = out.last_hidden_state
        return FusionOutput(states[:, :length], self.cross_pooler(states))

    def mlm_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for selected token states [M, H] -> [M, V] (decoder tied to word embeddings)."""
        return self.mlm_head(states, self.bert.embeddings.word_embeddings.weight)


def visual_parameter_names(model: SNPModel) -> set[str]:
    """Parameters that take the visual learning rate: backbone, its projection and img_fc."""
    return {name for name, _ in model.named_parameters() if name.startswith(("visual.", "img_fc."))}
