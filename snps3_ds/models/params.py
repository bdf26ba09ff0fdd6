"""Parameter counting (tied tensors once), by module, and the paper's Table II configurations."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch
from transformers import BertConfig

from snps3_ds.config import ModelConfig
from snps3_ds.local_files import resolve_text_dir
from snps3_ds.models.snp import TEXT_SIZES, SNPModel

SPLIT = {"bert", "visual"}  # modules reported one level deeper (bert.embeddings, visual.proj ...)

# Paper Table II (M parameters). The reference's count (REFERENCE §1.6) includes the unused 3-layer temporal
# encoder and both MLM heads; so do these configurations (temporal_layers=3, text_mlm_head=true).
TABLE2 = {("resnet50", "shared"): 160.4, ("resnet50", "separate"): 205.5,
          ("pvt_v2_b2", "shared"): 161.1, ("pvt_v2_b2", "separate"): 206.2}
TABLE2_MODEL = dict(text_config=TEXT_SIZES["bert-base"], temporal_layers=3, text_mlm_head=True, freeze_bn=True)


def module_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable-or-not parameters per module; named_parameters() yields a shared tensor once.

    Buffers (frozen BatchNorm statistics and affine terms, position ids) are not parameters.
    The MLM decoders reuse the word-embedding matrix at call time, so it is counted once, in bert.
    """
    counts: dict[str, int] = defaultdict(int)
    for name, param in model.named_parameters():
        parts = name.split(".")
        counts[".".join(parts[:2]) if parts[0] in SPLIT else parts[0]] += param.numel()
    return dict(counts)


def countable_config(cfg: ModelConfig, text_size: str | None = None) -> ModelConfig:
    """The same model with a random-init text BERT of the named (or the local model's) shape: no weights read."""
    if text_size is not None:
        return dataclasses.replace(cfg, text_config=TEXT_SIZES[text_size], visual_checkpoint=None)
    if cfg.text_config is None:
        shape = BertConfig.from_pretrained(str(resolve_text_dir(cfg.text_model)), local_files_only=True)
        cfg = dataclasses.replace(cfg, text_config=shape.to_dict())
    return dataclasses.replace(cfg, visual_checkpoint=None)


def build_on_meta(cfg: ModelConfig) -> SNPModel:
    """Build without allocating or initialising memory (shapes only), so BERT-base counts take a second."""
    with torch.device("meta"):
        return SNPModel(cfg, sep_token_id=102)


def count_model(cfg: ModelConfig) -> dict[str, int]:
    return module_counts(build_on_meta(cfg))


def momentum_copy_count(model: SNPModel) -> int:
    """Parameters of MoCo's (untrained) key encoders: copies of the towers that make contrastive features."""
    return sum(p.numel() for tower in model.momentum_towers().values() for p in tower.parameters())


def table2_counts() -> dict[tuple[str, str], int]:
    """Total parameters of the four Table II models, BERT-base built from its config."""
    return {(backbone, fusion): sum(count_model(ModelConfig(visual_backbone=backbone, fusion=fusion,
                                                            **TABLE2_MODEL)).values())
            for backbone, fusion in TABLE2}
