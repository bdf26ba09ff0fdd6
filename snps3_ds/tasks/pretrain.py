"""Pre-training task: SNP model + the enabled objectives -> weighted loss, terms and in-batch metrics.

Terms, each weighted by `objectives.<name>` (0 = off, DESIGN §4.3):
  contrastive  GVTM level 1: text pass [CLS] vs clip features, global in-batch InfoNCE (or MoCo queues)
  level2       GVTM level 2: fusion-scored pairs (similarity_dense), MIL-NCE; all local pairs or hard negatives
  vtm          matched / not matched on the fusion pooled output, random or hard negative captions
  mlm          fusion-pass masked token prediction (the loader's MLM or MSSM masking)
  text_mlm     the reference's text-pass MLM head (its input is unmasked)
  lvwm         local vision-word matching of the loader's chosen words against clip features
The fusion passes of level2 and vtm use the unmasked caption and share the positive pair's pass.

Negatives (`objectives.negatives`): `step` runs each optimiser step in two passes so the gathered objectives
see every sample of the step on every rank (snps3_ds.tasks.planned); `micro` gathers over ranks per
micro-batch; `auto` is `step` when the ds_config accumulates gradients and `micro` otherwise.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from snps3_ds.config import ModelConfig, ObjectivesConfig, RunConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.text.tokens import SpecialIds
from snps3_ds.distributed import gather_no_grad, gather_with_grad
from snps3_ds.models.snp import SNPModel, VideoFeatures
from snps3_ds.objectives.contrastive import GlobalContrastiveLoss, global_text_video_scores
from snps3_ds.objectives.lvwm import LVWMLoss, chosen_word_states
from snps3_ds.objectives.matching import CrossMatchingLoss
from snps3_ds.objectives.mlm import masked_positions, mlm_loss
from snps3_ds.objectives.moco import MomentumContrast
from snps3_ds.objectives.vtm import VTMLoss
from snps3_ds.tasks.attentive import AttentiveMasking
from snps3_ds.tasks.base import TaskOutput
from snps3_ds.tasks.in_batch import in_batch_recall
from snps3_ds.tasks.planned import PlannedSteps
from snps3_ds.tasks.seeding import draw_base, fusion_seed, seeded
from snps3_ds.tasks.step_plan import StepPlan

TERMS = ("contrastive", "level2", "vtm", "mlm", "text_mlm", "lvwm")


def build_pretrain_task(model: SNPModel, cfg: RunConfig, tokenizer, rank: int = 0, world_size: int = 1
                        ) -> "PretrainTask":
    """The pre-training task of a recipe: its objectives, and attentive masking when the recipe asks for it."""
    attentive = None
    if cfg.masking.attentive_probability > 0:
        attentive = AttentiveMasking(cfg.masking.attentive_probability, cfg.masking.probability,
                                     SpecialIds.from_tokenizer(tokenizer), cfg.train.seed, rank)
    return PretrainTask(model, cfg.objectives, cfg.model, rank, world_size, attentive)


class PretrainTask(PlannedSteps, nn.Module):
    def __init__(self, model: SNPModel, objectives: ObjectivesConfig, model_cfg: ModelConfig,
                 rank: int = 0, world_size: int = 1, attentive: AttentiveMasking | None = None) -> None:
        super().__init__()
        self.weights = {name: getattr(objectives, name) for name in TERMS if getattr(objectives, name) > 0}
        if not self.weights:
            raise ValueError("objectives: every weight is 0, nothing to train")
        if "text_mlm" in self.weights and model.text_mlm_head is None:
            raise ValueError("objectives.text_mlm > 0 needs the text-pass MLM head: set model.text_mlm_head=true")
        self.model = model
        self.rank, self.world_size = rank, world_size
        self.contrastive = GlobalContrastiveLoss(model_cfg.temperature, rank, world_size)
        self.moco = None
        if "contrastive" in self.weights and objectives.contrastive_queue > 0:  # key encoders built now, not lazily
            self.moco = MomentumContrast(model.momentum_towers(), model.hidden_size, objectives.contrastive_queue,
                                         objectives.contrastive_momentum, rank, world_size)
        self.level2 = CrossMatchingLoss(objectives.level2_hard_negatives, rank, world_size,
                                        objectives.level2_negatives)
        self.level2_negatives = objectives.level2_negatives  # what begin_step restores before the curriculum's step
        self.level2_hard_from_step = objectives.level2_hard_from_step
        if self.level2_hard_from_step < 0 or (self.level2_hard_from_step and objectives.level2_negatives == "hard"):
            raise ValueError(f"objectives.level2_hard_from_step: expected 0 (off) or a step >= 1 with "
                             f"level2_negatives random or sampled, got {self.level2_hard_from_step} with "
                             f"{objectives.level2_negatives!r}")
        self.vtm = VTMLoss(objectives.vtm_negatives, rank, world_size)
        self.lvwm = LVWMLoss(objectives.lvwm_temperature, rank, world_size)
        hard_l2 = "level2" in self.weights and objectives.level2_hard_negatives > 0
        self.mines = hard_l2 or ("vtm" in self.weights and objectives.vtm_negatives == "hard")
        self.gather_videos = hard_l2
        self.needs_text = self.mines or any(t in self.weights for t in ("contrastive", "text_mlm", "lvwm"))
        self.attentive = attentive if "mlm" in self.weights else None
        if self.attentive is not None:
            model.enable_attention_weights()
        self.negatives = objectives.negatives
        self.fusion_samples = objectives.fusion_samples
        self.lvwm_temperature = objectives.lvwm_temperature

    def rng_state(self) -> dict:
        """The task's own generators (exact resume); torch's global one is the trainer's business."""
        return {"attentive": self.attentive.state_dict()} if self.attentive is not None else {}

    def load_rng_state(self, state: dict) -> None:
        if self.attentive is not None and "attentive" in state:
            self.attentive.load_state_dict(state["attentive"])

    def begin_step(self, step: int) -> None:
        """The level-2 curriculum (objectives.level2_hard_from_step): the k hardest negatives from that step on."""
        hard = self.level2_hard_from_step and step >= self.level2_hard_from_step
        self.level2.negatives = "hard" if hard else self.level2_negatives

    def plans_steps(self, grad_accum: int) -> bool:
        """Two-pass optimiser steps: with negatives=step, or auto and gradient accumulation; only when a
        gathered objective or hard-negative mining is on (otherwise every term is per micro-batch anyway)."""
        gathers = self.mines or any(t in self.weights for t in ("contrastive", "lvwm"))
        wanted = self.negatives == "step" or (self.negatives == "auto" and grad_accum > 1)
        if gathers and wanted and self.fusion_samples and ("level2" in self.weights or "vtm" in self.weights):
            raise ValueError("objectives.fusion_samples needs micro-batch negatives: set objectives.negatives=micro "
                             "or use gradient_accumulation_steps 1")
        return gathers and wanted

    def forward(self, batch: VideoTextBatch, plan: StepPlan | None = None, micro: int = 0) -> TaskOutput:
        """One micro-batch: on its own (negatives over the ranks' micro-batches), or as micro-batch `micro` of
        a planned step (negatives over the whole step). `micro` 0 starts an optimiser step (MoCo's update)."""
        if batch.num_texts != batch.num_videos:
            raise ValueError(f"pre-training pairs one caption per video; got {batch.num_texts} captions "
                             f"for {batch.num_videos} videos")
        if plan is not None:
            return self.planned_forward(batch, plan, micro)
        model = self.model
        base = draw_base()  # first: each fusion pass below runs under its own seed from it (tasks.seeding)
        attentive = self._draw_attentive()
        video, text = self._towers(batch, attentive)
        if attentive:
            batch = self.attentive.apply(batch, text.importance)
        device = batch.frames.device
        terms: dict[str, torch.Tensor] = {}
        metrics: dict[str, torch.Tensor] = {}
        similarity = None
        if text is not None:  # detached global level-1 matrix: metrics and hard-negative mining
            similarity = global_text_video_scores(text.global_feature, video.clip_features, batch.clip_mask,
                                                  model.temperature(), self.world_size)
            rows = self._rows(batch)
            metrics.update(in_batch_recall(similarity[rows], rows, "l1"))
        if "contrastive" in self.weights:
            terms["contrastive"] = self._contrastive(batch, text.global_feature, video, update=micro == 0)
        if "level2" in self.weights or "vtm" in self.weights:
            with seeded(fusion_seed(base, "level2"), device):
                self._matching(*self._fusion_subset(batch, video, similarity), terms, metrics)
        normaliser = self._masked_normaliser(batch)
        with seeded(fusion_seed(base, "mlm"), device):
            self._masked_terms(batch, video, text, terms, metrics, normaliser)
        if "lvwm" in self.weights:
            words = chosen_word_states(text.states, batch.word_positions)
            out_lvwm = self.lvwm(words, video.clip_features, batch.clip_mask)
            terms["lvwm"] = out_lvwm.loss
            metrics.update(in_batch_recall(out_lvwm.text_to_video, out_lvwm.targets, "lvwm"))
        total = sum(self.weights[name] * loss for name, loss in terms.items())
        return TaskOutput(total, {name: loss.detach() for name, loss in terms.items()}, metrics)

    def _masked_normaliser(self, batch: VideoTextBatch) -> float | None:
        """Masked-token losses as a mean over every rank's masked tokens: this rank's sum over (global count /
        world), so the engine's mean over ranks is the global mean even when ranks masked different numbers."""
        if self.world_size == 1 or not ("mlm" in self.weights or "text_mlm" in self.weights):
            return None
        count = torch.tensor([float((batch.mlm_labels != -100).sum())], dtype=torch.float64)
        torch.distributed.all_reduce(count)
        return float(count) / self.world_size

    def _draw_attentive(self) -> bool:
        """Whether this micro-batch's fusion MLM masks by attention (a draw per training micro-batch)."""
        return self.attentive is not None and self.training and self.attentive.draw()

    def _towers(self, batch: VideoTextBatch, attentive: bool):
        """The video tower, then (when an objective needs it) the text pass: the same order in both passes of a
        planned step, so the second pass repeats the first one's dropout."""
        video = self.model.encode_video(batch.frames, batch.clip_mask)
        text = None
        if self.needs_text or attentive:
            text = self.model.encode_text(batch.text_ids, batch.text_mask, importance=attentive)
        return video, text

    def _masked_terms(self, batch: VideoTextBatch, video: VideoFeatures, text, terms: dict, metrics: dict,
                      normaliser: float | None = None) -> None:
        """Fusion-pass MLM/MSSM and the optional text-pass MLM; `normaliser`: divide the token sum by this
        (a global count) instead of taking this batch's mean."""
        chosen = masked_positions(batch.mlm_labels)
        if "mlm" in self.weights:
            owners = batch.text_video_index
            fused = self.model.fuse(batch.mlm_ids, batch.text_mask, video.tokens[owners], batch.clip_mask[owners])
            out = mlm_loss(self.model.mlm_logits(fused.text_states[chosen]), batch.mlm_labels[chosen], normaliser)
            terms["mlm"], metrics["mlm_acc"] = out.loss, out.accuracy
        if "text_mlm" in self.weights:
            out = mlm_loss(self.model.text_mlm_logits(text.states[chosen]), batch.mlm_labels[chosen], normaliser)
            terms["text_mlm"], metrics["text_mlm_acc"] = out.loss, out.accuracy

    def _fusion_subset(self, batch: VideoTextBatch, video: VideoFeatures, similarity: torch.Tensor | None
                       ) -> tuple[VideoTextBatch, VideoFeatures, torch.Tensor | None]:
        """The first objectives.fusion_samples samples of every rank's micro-batch, and the level-1 matrix between
        them (rank r's sample i becomes r * m + i): the same sub-problem on every rank, so gathers still match."""
        size, m = batch.num_videos, self.fusion_samples
        if m <= 0 or m >= size:
            return batch, video, similarity
        keep = slice(0, m)
        sub = dataclasses.replace(batch, keys=batch.keys[keep], frames=batch.frames[keep],
                                  clip_mask=batch.clip_mask[keep], text_ids=batch.text_ids[keep],
                                  text_mask=batch.text_mask[keep], text_video_index=batch.text_video_index[keep],
                                  mlm_ids=batch.mlm_ids[keep], mlm_labels=batch.mlm_labels[keep], word_positions=None)
        sub_video = VideoFeatures(video.tokens[keep], video.clip_features[keep], video.clip_mask[keep])
        if similarity is not None:
            index = (torch.arange(self.world_size, device=similarity.device)[:, None] * size
                     + torch.arange(m, device=similarity.device)).flatten()
            similarity = similarity[index][:, index]
        return sub, sub_video, similarity

    def _rows(self, batch: VideoTextBatch) -> torch.Tensor:
        """Global indices of this rank's samples (ranks hold equal micro-batches, in rank order)."""
        return self.rank * batch.num_videos + torch.arange(batch.num_videos, device=batch.text_ids.device)

    def _contrastive(self, batch: VideoTextBatch, text: torch.Tensor, video: VideoFeatures,
                     update: bool) -> torch.Tensor:
        temperature = self.model.temperature()
        if self.moco is None:
            return self.contrastive(text, video.clip_features, batch.clip_mask, temperature).loss
        return self.moco(self.model.momentum_towers(), (text, video.clip_features), batch, temperature, update)

    def _matching(self, batch: VideoTextBatch, video: VideoFeatures, similarity: torch.Tensor | None,
                  terms: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor]) -> None:
        """Level 2 and VTM: unmasked captions fused with videos; the positive pairs' pass is shared."""
        model = self.model
        pairs = FusionPairs(model, batch, video, self.rank, self.world_size, self.gather_videos)
        same_caption = pairs.same_caption() if self.mines or "vtm" in self.weights else None
        rows = self._rows(batch)
        positive = pairs.pooled(rows, rows)
        if "level2" in self.weights:
            out = self.level2(lambda t, v: model.match_score(pairs.pooled(t, v)), model.match_score(positive),
                              similarity, same_caption)
            terms["level2"] = out.loss
            metrics.update(in_batch_recall(out.video_scores, out.targets, "l2"))
        if "vtm" in self.weights:
            videos, captions, _ = self.vtm.negatives_for(batch.num_videos, similarity, same_caption, rows.device)
            negative = pairs.pooled(captions, rows[videos]) if len(videos) else positive[:0]
            out_vtm = self.vtm(model.vtm_logits(positive), model.vtm_logits(negative))
            terms["vtm"], metrics["vtm_acc"] = out_vtm.loss, out_vtm.accuracy


class FusionPairs:
    """Fuses caption t with video v, both named by their index in the GLOBAL batch.

    Caption ids are gathered from every rank (integers, no gradient). Clip tokens are gathered with
    gradient only when other ranks' videos are needed (level-2 hard negatives); otherwise only this
    rank's videos can be named.
    """

    def __init__(self, model: SNPModel, batch: VideoTextBatch, video: VideoFeatures, rank: int, world_size: int,
                 gather_videos: bool) -> None:
        self.model = model
        self.ids = gather_no_grad(batch.text_ids, world_size)
        self.mask = gather_no_grad(batch.text_mask, world_size)
        tokens, clip_mask = video.tokens, batch.clip_mask
        self.video_offset = rank * batch.num_videos
        if gather_videos and world_size > 1:
            tokens = gather_with_grad(tokens.float(), rank, world_size).to(tokens.dtype)
            clip_mask = gather_no_grad(clip_mask.float(), world_size).bool()
            self.video_offset = 0
        self.tokens, self.clip_mask = tokens, clip_mask

    def pooled(self, texts: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
        """cross_pooler output [P, H] of the pairs (texts[p], videos[p])."""
        videos = videos - self.video_offset
        return self.model.fuse(self.ids[texts], self.mask[texts], self.tokens[videos], self.clip_mask[videos]).pooled

    def same_caption(self) -> torch.Tensor:
        """[N_all, N_all] True where two captions are token-identical (never negatives of each other)."""
        ids = self.ids * self.mask
        return (ids[:, None, :] == ids[None, :, :]).all(dim=-1)
