"""Building the tokenizer and model from the model config (local files only)."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from snps3_ds.config import ModelConfig
from snps3_ds.data.text.tokens import load_tokenizer
from snps3_ds.models.snp import SNPModel


def build_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """cfg.tokenizer, else the text model's own directory; a random-init BERT uses the packaged vocab."""
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer)
    return load_tokenizer("packaged" if cfg.text_config is not None else cfg.text_model)


def build_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> SNPModel:
    model = SNPModel(cfg, sep_token_id=tokenizer.sep_token_id)
    if model.bert.config.vocab_size < len(tokenizer):
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the BERT's vocab_size is "
                         f"{model.bert.config.vocab_size}; model.tokenizer and model.text_model must match")
    return model
