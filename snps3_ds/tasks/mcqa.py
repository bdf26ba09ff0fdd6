"""Multi-choice QA scoring: every (option, video) pair scored, the best option per question chosen.

As in the paper (REFERENCE §5.3), multi-choice is zero-shot transfer of a retrieval model: the options are
scored with the fusion matching scorer (level 2: similarity_dense on the fused cross_pooler output). The
dual-encoder score (level 1: logsumexp over clips of cos / T) is a second, cheaper reading. Training, when
wanted, is retrieval on the right option (snps3_ds.downstream.texts with train=True and PretrainTask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.models.snp import SNPModel
from snps3_ds.objectives.contrastive import NEG_INF


@dataclass
class OptionScores:
    fusion: torch.Tensor  # [N] level-2 logit of each option with its video
    dual: torch.Tensor  # [N] level-1 score of each option with its video


@torch.no_grad()
def option_scores(model: SNPModel, batch: VideoTextBatch, temperature: float) -> OptionScores:
    """Both scores of every text of the batch against its own video (text_video_index), fp32."""
    video = model.encode_video(batch.frames, batch.clip_mask)
    owners = batch.text_video_index
    fused = model.fuse(batch.text_ids, batch.text_mask, video.tokens[owners], batch.clip_mask[owners])
    text = model.encode_text(batch.text_ids, batch.text_mask).global_feature
    dual = pair_dual_scores(text, video.clip_features[owners], batch.clip_mask[owners], temperature)
    return OptionScores(model.match_score(fused.pooled).float(), dual)


def pair_dual_scores(text: torch.Tensor, clips: torch.Tensor, clip_mask: torch.Tensor, temperature: float
                     ) -> torch.Tensor:
    """Level-1 score of text n with clips[n] [N, T, D]: the diagonal of text_video_scores, in O(N)."""
    logits = torch.einsum("nd,ntd->nt", text.float(), clips.float()) / temperature
    return torch.logsumexp(logits.masked_fill(~clip_mask.bool(), NEG_INF), dim=-1)


def choice_correct(scores: torch.Tensor, labels: torch.Tensor, options: int = 5) -> torch.Tensor:
    """One bool per question from consecutive groups of `options` scores [Q * options] and 1/0 labels.

    Ties are counted against the model (as the retrieval ranks are): a question is right only when its
    right option scores strictly above every wrong one, so a constant scorer gets 0, not 20 %.
    """
    if scores.numel() % options or labels.shape != scores.shape:
        raise ValueError(f"multi-choice scores {tuple(scores.shape)} / labels {tuple(labels.shape)}: expected "
                         f"equal shapes made of groups of {options} options")
    scores, right = scores.view(-1, options).float(), labels.view(-1, options).bool()
    if not (right.sum(dim=1) == 1).all():
        raise ValueError("multi-choice labels: every question needs exactly one right option (label 1)")
    best_wrong = scores.masked_fill(right, float("-inf")).max(dim=1).values
    return scores[right] > best_wrong

