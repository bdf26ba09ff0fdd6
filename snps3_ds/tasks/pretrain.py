"""Pre-training task: SNP model + the enabled objectives -> weighted loss, terms and in-batch metrics."""

from __future__ import annotations

import torch
from torch import nn

from snps3_ds.config import ModelConfig, ObjectivesConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.evaluation.metrics import query_ranks
from snps3_ds.models.snp import SNPModel
from snps3_ds.objectives.contrastive import GlobalContrastiveLoss
from snps3_ds.objectives.mlm import masked_positions, mlm_loss
from snps3_ds.tasks.base import TaskOutput


class PretrainTask(nn.Module):
    """Level-1 global contrastive (text pass vs clip features) + cross-modal MLM (fusion pass)."""

    def __init__(self, model: SNPModel, objectives: ObjectivesConfig, model_cfg: ModelConfig,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if objectives.contrastive <= 0 and objectives.mlm <= 0:
            raise ValueError("objectives: every weight is 0, nothing to train")
        self.model = model
        self.weights = objectives
        self.contrastive = GlobalContrastiveLoss(model_cfg.temperature, rank, world_size)

    def forward(self, batch: VideoTextBatch) -> TaskOutput:
        video = self.model.encode_video(batch.frames, batch.clip_mask)
        losses: dict[str, torch.Tensor] = {}
        metrics: dict[str, torch.Tensor] = {}
        total = video.clip_features.new_zeros(())
        if self.weights.contrastive > 0:
            text = self.model.encode_text(batch.text_ids, batch.text_mask)
            out = self.contrastive(text.global_feature, video.clip_features, batch.clip_mask)
            total = total + self.weights.contrastive * out.loss
            losses["contrastive"] = out.loss.detach()
            metrics.update(_in_batch_recall(out.text_to_video, out.targets, "l1"))
        if self.weights.mlm > 0:
            owners = batch.text_video_index
            fused = self.model.fuse(batch.mlm_ids, batch.text_mask, video.tokens[owners], batch.clip_mask[owners])
            chosen = masked_positions(batch.mlm_labels)
            out_mlm = mlm_loss(self.model.mlm_logits(fused.text_states[chosen]), batch.mlm_labels[chosen])
            total = total + self.weights.mlm * out_mlm.loss
            losses["mlm"] = out_mlm.loss.detach()
            metrics["mlm_acc"] = out_mlm.accuracy
        return TaskOutput(total, losses, metrics)


def _in_batch_recall(scores: torch.Tensor, targets: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """Text->video R@1/5 and median rank of the local texts among the global batch's videos."""
    truth = torch.zeros_like(scores, dtype=torch.bool)
    truth[torch.arange(scores.shape[0]), targets] = True
    ranks = query_ranks(scores, truth).float()
    return {f"{prefix}_t2v_R@1": (ranks <= 1).float().mean() * 100,
            f"{prefix}_t2v_R@5": (ranks <= 5).float().mean() * 100,
            f"{prefix}_t2v_MdR": ranks.median()}



