"""The SNP model: visual clip tokens plus ONE BERT that serves both the text pass and the fusion pass.

`model.fusion: separate` switches to the paper's P3E baseline: an independent `fusion_layers`-deep BERT
with its own embeddings does the fusion pass. Single-device model code: it knows nothing of DeepSpeed,
ranks or precision (DESIGN §4.1-4.2).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from snps3_ds.config import ModelConfig
from snps3_ds.local_files import resolve_text_dir
from snps3_ds.models.heads import MLMHead, in_fp32, similarity_dense
from snps3_ds.models.temporal import TemporalEncoder
from snps3_ds.models.visual import VisualEncoder

# Named text-model shapes for `model.text_config` (random init, no weights): used by count_params.
TEXT_SIZES: dict[str, dict] = {
    "bert-base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2),
}


@dataclass
class TextFeatures:
    states: torch.Tensor  # [N, L, H] token states of the text pass
    global_feature: torch.Tensor  # [N, H] L2-normalised pooled [CLS]
    importance: torch.Tensor | None = None  # [N, L] attention each token receives (attentive masking only)


@dataclass
class VideoFeatures:
    tokens: torch.Tensor  # [B, T*S, H] fusion input: S tokens per clip (1 pooled, or h*w grid cells), clip-major
    clip_features: torch.Tensor  # [B, T, H] L2-normalised img_fc(tokens): the contrastive feature
    clip_mask: torch.Tensor  # [B, T] True for real clips


@dataclass
class FusionOutput:
    text_states: torch.Tensor  # [N, L, H] fusion-pass states of the caption tokens
    pooled: torch.Tensor  # [N, H] cross_pooler(fusion [CLS]), fp32: it feeds only heads


def build_bert(cfg: ModelConfig) -> BertModel:
    """The packaged/local pretrained BERT, or a random-init one of the shape in cfg.text_config."""
    if cfg.text_config is not None:
        return BertModel(BertConfig(**cfg.text_config), add_pooling_layer=True)
    return BertModel.from_pretrained(str(resolve_text_dir(cfg.text_model)), local_files_only=True,
                                     add_pooling_layer=True)


def build_fusion_bert(text_bert: BertModel, layers: int) -> BertModel:
    """P3E: an independent BERT (own embeddings, `layers` layers, no pooler) started from the text BERT's
    embeddings and first layers, as the reference's commented-out `cross_encoder` would have been (layers
    beyond the text BERT's depth keep their random init)."""
    config = BertConfig(**{**text_bert.config.to_dict(), "num_hidden_layers": layers})
    fusion = BertModel(config, add_pooling_layer=False)
    own = fusion.state_dict()
    fusion.load_state_dict({k: v for k, v in text_bert.state_dict().items() if k in own}, strict=False)
    return fusion


def video_features(visual: nn.Module, temporal: nn.Module | None, img_fc: nn.Module, frames: torch.Tensor,
                   clip_mask: torch.Tensor, grid_tokens: bool = False) -> VideoFeatures:
    """Clip tokens (grid mean over space), optional temporal encoder, then img_fc + L2 norm (fp32).

    With `grid_tokens` the fusion input is every grid cell instead of the clip's mean; the temporal
    encoder's change to a clip token is added to each of its cells. The contrastive feature is the same.
    A function of the towers rather than a method, so MoCo's momentum copies run the very same code.
    """
    grid = visual(frames)  # [B, T, H, h, w]
    pooled = grid.mean(dim=(-2, -1))  # [B, T, H]
    tokens = pooled if temporal is None else temporal(pooled, clip_mask)
    fusion = tokens
    if grid_tokens:
        cells = grid.flatten(-2).transpose(-2, -1)  # [B, T, h*w, H]
        fusion = (cells + (tokens - pooled).unsqueeze(-2)).flatten(1, 2)
    return VideoFeatures(fusion, F.normalize(img_fc(tokens).float(), dim=-1), clip_mask)


def text_features(bert: BertModel, ids: torch.Tensor, mask: torch.Tensor, importance: bool = False) -> TextFeatures:
    """The text pass. With `importance`, also the attention each token receives (REFERENCE §1.3: summed
    over layers and queries, averaged over heads); it needs the eager attention implementation."""
    out = bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), output_attentions=importance)
    received = None
    if importance:
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError("attention weights are unavailable: call SNPModel.enable_attention_weights() first")
        received = sum(layer.detach().float().mean(dim=1).sum(dim=1) for layer in out.attentions)
    return TextFeatures(out.last_hidden_state, F.normalize(out.pooler_output.float(), dim=-1), received)


class SNPModel(nn.Module):
    """Shared Network Pre-training: BERT embeds and encodes captions alone (text pass) and captions
    followed by clip tokens (fusion pass) with the same embeddings and layers; only the pooler is copied.

    Heads (REFERENCE §1.1): img_fc (contrastive clip feature), cross_pooler, similarity_dense (level-2
    matching score), vtm_head (matched / not matched), mlm_head (fusion pass, decoder tied to the fusion
    word embeddings) and, with model.text_mlm_head, a second MLM head on the text pass.
    """

    def __init__(self, cfg: ModelConfig, sep_token_id: int) -> None:
        super().__init__()
        self.bert = build_bert(cfg)
        config = self.bert.config
        hidden = config.hidden_size
        self.visual = VisualEncoder(cfg.visual_backbone, hidden, cfg.visual_checkpoint, cfg.freeze_bn,
                                    cfg.visual_grad_checkpointing)
        self.temporal = None
        if cfg.temporal_layers > 0:
            self.temporal = TemporalEncoder(config, cfg.temporal_layers)
            self.temporal.init_from(self.bert)
        self.img_fc = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.fusion_bert = build_fusion_bert(self.bert, cfg.fusion_layers) if cfg.fusion == "separate" else None
        self.cross_pooler = copy.deepcopy(self.bert.pooler)
        self.similarity_dense = similarity_dense(hidden)
        self.vtm_head = nn.Linear(hidden, 2)
        self.mlm_head = MLMHead(hidden, config.vocab_size, config.layer_norm_eps)
        self.text_mlm_head = MLMHead(hidden, config.vocab_size, config.layer_norm_eps) if cfg.text_mlm_head else None
        self.grid_tokens = cfg.fusion_clip_tokens == "grid"
        self.min_temperature = cfg.min_temperature
        self.fixed_temperature = cfg.temperature
        if cfg.learn_temperature:
            # shape [1], not a scalar: DeepSpeed's broadcast views every parameter as bytes, which 0-d cannot do
            self.log_temperature = nn.Parameter(torch.full((1,), math.log(cfg.temperature)))
        else:
            self.log_temperature = None
        self.register_buffer("sep_id", torch.tensor([sep_token_id]), persistent=False)
        if cfg.text_grad_checkpointing:
            for bert in (self.bert, self.fusion_bert, self.temporal and self.temporal.bert):
                if bert is not None:
                    bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @property
    def hidden_size(self) -> int:
        return self.bert.config.hidden_size

    @property
    def fusion_encoder(self) -> BertModel:
        """The BERT that runs the fusion pass: the text BERT itself (SNP) or the separate one (P3E)."""
        return self.bert if self.fusion_bert is None else self.fusion_bert

    def temperature(self) -> torch.Tensor | float:
        """Level-1 contrastive temperature: fixed, or learned (exp of a parameter, floored at min_temperature)."""
        if self.log_temperature is None:
            return self.fixed_temperature
        return self.log_temperature.float().exp().clamp(min=self.min_temperature).squeeze(0)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor, importance: bool = False) -> TextFeatures:
        return text_features(self.bert, ids, mask, importance)

    def enable_attention_weights(self) -> None:
        """Switch BERT to eager attention so the text pass can return its weights (fused kernels do not)."""
        self.bert.set_attn_implementation("eager")

    def encode_video(self, frames: torch.Tensor, clip_mask: torch.Tensor) -> VideoFeatures:
        return video_features(self.visual, self.temporal, self.img_fc, frames, clip_mask, self.grid_tokens)

    def momentum_towers(self) -> dict[str, nn.Module]:
        """The towers MoCo keeps momentum copies of: everything from frames / ids to the contrastive features."""
        towers = {"visual": self.visual, "img_fc": self.img_fc, "bert": self.bert}
        return towers if self.temporal is None else {**towers, "temporal": self.temporal}

    def fuse(self, ids: torch.Tensor, mask: torch.Tensor, clip_tokens: torch.Tensor,
             clip_mask: torch.Tensor) -> FusionOutput:
        """`[CLS] caption [SEP] pad | v_1 .. v_T [SEP]` through the fusion encoder's embeddings and layers.

        Captions keep token type 0 and positions 0..L-1; the visual part has type 1 and positions
        restarting at 0, as in the reference. Attention is bidirectional over both parts. clip_tokens may
        hold several tokens per clip ([N, T*S, H], model.fusion_clip_tokens=grid); clip_mask is per clip.
        """
        encoder = self.fusion_encoder
        count, length = ids.shape
        clips = clip_tokens.shape[1]
        per_clip, rest = divmod(clips, clip_mask.shape[1])
        if rest:
            raise ValueError(f"fuse: {clips} clip tokens for {clip_mask.shape[1]} clips; expected a multiple")
        max_positions = encoder.config.max_position_embeddings
        if clips + 1 > max_positions:
            raise ValueError(f"fuse: {clips} clip tokens + [SEP] exceed the BERT's {max_positions} positions; use fewer "
                             "clips, a smaller image or model.fusion_clip_tokens=pooled")
        if per_clip > 1:
            clip_mask = clip_mask.repeat_interleave(per_clip, dim=1)
        words = encoder.embeddings.word_embeddings
        sep = words(self.sep_id).expand(count, 1, -1)
        embeds = torch.cat([words(ids), clip_tokens.to(sep.dtype), sep], dim=1)
        device = ids.device
        positions = torch.cat([torch.arange(length, device=device), torch.arange(clips + 1, device=device)])
        types = torch.cat([torch.zeros(length, device=device), torch.ones(clips + 1, device=device)]).long()
        attention = torch.cat([mask, clip_mask.to(mask.dtype), torch.ones_like(mask[:, :1])], dim=1)
        out = encoder(inputs_embeds=embeds, attention_mask=attention,
                      position_ids=positions.expand(count, -1), token_type_ids=types.expand(count, -1))
        states = out.last_hidden_state
        return FusionOutput(states[:, :length], in_fp32(self.cross_pooler, states[:, :1]))

    def match_score(self, pooled: torch.Tensor) -> torch.Tensor:
        """Level-2 matching logit per fused pair [N, H] -> [N], fp32."""
        return in_fp32(self.similarity_dense, pooled).squeeze(-1)

    def vtm_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """Matched / not matched logits per fused pair [N, H] -> [N, 2], fp32."""
        return in_fp32(self.vtm_head, pooled)

    def mlm_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of selected fusion states [M, H] -> [M, V], fp32 (decoder tied to word embeddings)."""
        return self.mlm_head(states, self.fusion_encoder.embeddings.word_embeddings.weight)

    def text_mlm_logits(self, states: torch.Tensor) -> torch.Tensor:
        """The optional text-pass MLM head (REFERENCE §2.4 `text_encoder_mlm`); needs model.text_mlm_head."""
        if self.text_mlm_head is None:
            raise ValueError("objectives.text_mlm > 0 needs the text-pass MLM head: set model.text_mlm_head=true")
        return self.text_mlm_head(states, self.bert.embeddings.word_embeddings.weight)


def visual_parameter_names(model: SNPModel) -> set[str]:
    """Parameters that take the visual learning rate: backbone, its projection and img_fc."""
    return {name for name, _ in model.named_parameters() if name.startswith(("visual.", "img_fc."))}
