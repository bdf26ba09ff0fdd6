"""SNP model shapes and the sharing that defines it, on a random-init tiny BERT and timm's test_resnet."""

from __future__ import annotations

import torch

from snps3_ds.config import RunConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.tasks.pretrain import PretrainTask


def _batch(cfg: RunConfig, tokenizer, videos: int = 3) -> VideoTextBatch:
    from snps3_ds.data.text import tokenize

    ids, mask = tokenize(tokenizer, ["a red circle moves left"] * videos, cfg.data.max_text_len)
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    masked = ids.clone()
    masked[:, 2] = tokenizer.mask_token_id
    clip_mask = torch.ones(videos, cfg.data.num_clips, dtype=torch.bool)
    clip_mask[0, 1:] = False
    size = cfg.data.image_size
    return VideoTextBatch([f"k{i}" for i in range(videos)], torch.randn(videos, cfg.data.num_clips, 3, size, size),
                          clip_mask, ids, mask, torch.arange(videos), masked, labels)


def test_model_forward_backward_shapes(tiny_config: RunConfig) -> None:
    tokenizer = build_tokenizer(tiny_config.model)
    model = build_model(tiny_config.model, tokenizer)
    batch = _batch(tiny_config, tokenizer)
    hidden, clips, length = model.hidden_size, tiny_config.data.num_clips, tiny_config.data.max_text_len
    video = model.encode_video(batch.frames, batch.clip_mask)
    assert video.tokens.shape == (3, clips, hidden) and video.clip_features.shape == (3, clips, hidden)
    torch.testing.assert_close(video.clip_features.norm(dim=-1), torch.ones(3, clips))
    text = model.encode_text(batch.text_ids, batch.text_mask)
    assert text.states.shape == (3, length, hidden) and text.global_feature.shape == (3, hidden)
    fused = model.fuse(batch.mlm_ids, batch.text_mask, video.tokens, batch.clip_mask)
    assert fused.text_states.shape == (3, length, hidden) and fused.pooled.shape == (3, hidden)

    task = PretrainTask(model, tiny_config.objectives, tiny_config.model)
    out = task(batch)
    assert set(out.losses) == {"contrastive", "mlm"} and out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.visual.parameters())
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert model.mlm_head.dense.weight.grad is not None  # cross_pooler serves the matching objectives (later)


def test_model_fusion_shares_the_text_bert(tiny_config: RunConfig) -> None:
    """SNP: with only the MLM objective on, the gradient reaches BERT's layers and word embeddings
    through the fusion pass, and no second encoder exists."""
    tokenizer = build_tokenizer(tiny_config.model)
    model = build_model(tiny_config.model, tokenizer)
    tiny_config.objectives.contrastive = 0.0
    task = PretrainTask(model, tiny_config.objectives, tiny_config.model)
    task(_batch(tiny_config, tokenizer)).loss.backward()
    assert model.bert.encoder.layer[-1].output.dense.weight.grad.abs().sum() > 0
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.bert.pooler.dense.weight.grad is None  # the text pooler is untouched by fusion
    bert_modules = [m for m in model.modules() if type(m).__name__ == "BertModel"]
    assert len(bert_modules) == 1


def test_model_padded_clips_do_not_change_fusion(tiny_config: RunConfig) -> None:
    tokenizer = build_tokenizer(tiny_config.model)
    model = build_model(tiny_config.model, tokenizer).eval()
    batch = _batch(tiny_config, tokenizer)
    video = model.encode_video(batch.frames, batch.clip_mask)
    noisy = video.tokens.clone()
    noisy[0, 1:] += 5.0  # video 0 has one real clip
    a = model.fuse(batch.mlm_ids, batch.text_mask, video.tokens, batch.clip_mask).pooled[0]
    b = model.fuse(batch.mlm_ids, batch.text_mask, noisy, batch.clip_mask).pooled[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
