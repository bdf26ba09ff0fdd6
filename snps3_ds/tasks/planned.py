"""The pre-training task's two-pass optimiser step (global negatives across gradient accumulation).

Pass 1 (`step_features`, no gradient) keeps each micro-batch's features; `plan_step` (every rank, once per
step) gathers them, computes the gathered objectives over the whole step and their gradients w.r.t. this
rank's features, mines hard negatives from the whole step's similarity, and pre-scores level-2's candidate
pairs; pass 2 (`planned_forward`, through the engine) recomputes each micro-batch with the same randomness
and back-propagates the cached gradients plus its own terms. snps3_ds.tasks.step_plan explains the maths.

Random state (snps3_ds.tasks.seeding): the trainer seeds torch before each micro-batch in both passes and the
task draws the micro-batch's base seed first, so the towers' dropout repeats and every fusion pass runs under
the same seed from that base; a pair scored in the plan and again in pass 2 sees the same dropout. BatchNorm
running statistics are left as they were by the first pass (the second one updates them).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.seeds import stream_seed
from snps3_ds.objectives.contrastive import text_video_scores
from snps3_ds.objectives.lvwm import chosen_word_states
from snps3_ds.objectives.matching import mil_nce_all_pairs, mil_nce_candidates, mine_hard_negatives, mining_scores
from snps3_ds.objectives.vtm import choose_negative_captions
from snps3_ds.tasks.base import TaskOutput
from snps3_ds.tasks.seeding import batchnorm_statistics_kept, draw_base, fusion_seed, seeded
from snps3_ds.tasks.in_batch import in_batch_recall
from snps3_ds.tasks.step_plan import (PairPlan, StepFeatures, StepPlan, concat, gather_pair_scores, gathered,
                                      global_sum, own_rows, pair_owner)

class PlannedSteps:
    """Mixed into PretrainTask: the step_features / plan_step / planned_forward trio (tasks.base)."""

    def describe_step(self, micro: int, grad_accum: int, world: int, clips: int) -> str:
        """A line for the run's start: how many negatives a step sees, and what the feature cache costs."""
        step_batch = micro * grad_accum * world
        if not self.plans_steps(grad_accum):
            return (f"negatives per step: {micro * world} captions x {micro * world} videos (each micro-batch over "
                    f"the ranks; the step's batch is {step_batch}: objectives.negatives=step sees all of it)")
        hidden = self.model.hidden_size
        words = 3 if "lvwm" in self.weights else 0
        per_sample = hidden * (1 + clips + words) + clips  # text, clip features, word states, mask
        own = micro * grad_accum * (per_sample + (hidden * clips if self.level2.hard_negatives else 0))
        gathered = step_batch * (hidden * (1 + clips) + clips)
        # With grid clip tokens level 2 caches each clip's feature-map cells, whose count only a forward knows.
        cells = "; level 2's clip tokens counted once per clip: x the cells per clip with grid clip tokens" if (
            self.level2.hard_negatives and self.model.grid_tokens) else ""
        return (f"negatives per step: {step_batch} captions x {step_batch} videos (micro {micro} x accumulation "
                f"{grad_accum} x world {world}; two passes per step: features first, cached gradients after; "
                f"feature cache {4 * (own + gathered) / 2**20:.2f} MB per rank{cells})")

    # --- pass 1 ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step_features(self, batch: VideoTextBatch, micro: int) -> StepFeatures:
        if self.moco is not None and micro == 0 and self.training:
            self.moco.update(self.model.momentum_towers())  # once per optimiser step
        base = draw_base()
        attentive = self._draw_attentive()
        with batchnorm_statistics_kept(self.model):
            video, text = self._towers(batch, attentive)
        masked = self.attentive.apply(batch, text.importance) if attentive else batch
        words = None
        if "lvwm" in self.weights:
            words = chosen_word_states(text.states, batch.word_positions).float()
        keys = None
        if self.moco is not None:
            keys = self.moco.keys_for(batch.frames, batch.clip_mask, batch.text_ids, batch.text_mask)
        tokens = video.tokens if "level2" in self.weights and self.level2.hard_negatives > 0 else None
        return StepFeatures(text.global_feature.float(), video.clip_features.float(), batch.clip_mask.bool(),
                            batch.text_ids, batch.text_mask, words, tokens, masked.mlm_ids, masked.mlm_labels, keys,
                            base)

    # --- the plan ----------------------------------------------------------------------------------------
    def plan_step(self, features: list[StepFeatures], seed: int) -> StepPlan:
        world = self.world_size
        device = features[0].text.device
        all_text, all_clips = gathered(features, "text", world), gathered(features, "clips", world)
        all_mask = gathered(features, "clip_mask", world)
        temperature = self.model.temperature()
        fixed = float(temperature.detach()) if isinstance(temperature, torch.Tensor) else temperature
        similarity = text_video_scores(all_text, all_clips, all_mask, fixed)  # [N, N] detached
        rows = torch.arange(similarity.shape[0], device=device)
        metrics = in_batch_recall(similarity, rows, "l1")
        losses, grads, temperature_grad = self._gathered_losses(features, metrics)
        plan = StepPlan(world, len(features), losses, metrics, grads, temperature_grad,
                        gathered(features, "ids", world), gathered(features, "text_mask", world))
        plan.fusion_seeds = [{name: fusion_seed(f.seed, name) for name in ("level2", "vtm", "mlm")} for f in features]
        same = None
        if self.mines or "vtm" in self.weights:
            ids = plan.ids * plan.text_mask
            same = (ids[:, None, :] == ids[None, :, :]).all(dim=-1)
        if "level2" in self.weights and self.level2.hard_negatives > 0:
            self._plan_level2(plan, features, similarity, same, seed)
        if "vtm" in self.weights:
            self._plan_vtm(plan, features, similarity, same, seed)
        if "mlm" in self.weights or "text_mlm" in self.weights:
            plan.mlm_total = int(global_sum(sum(int((f.mlm_labels != -100).sum()) for f in features), world))
            plan.mlm_masks = [(f.mlm_ids, f.mlm_labels) for f in features]
        return plan

    def _gathered_losses(self, features: list[StepFeatures], metrics: dict):
        """Level 1 (or MoCo) and LVWM over the whole step: their global values and the gradient of their
        weighted sum w.r.t. this rank's features (and this rank's share of the temperature's)."""
        leaves = {name: concat(features, name).detach().requires_grad_() for name in ("text", "clips")}
        if "lvwm" in self.weights:
            leaves["words"] = concat(features, "words").detach().requires_grad_()
        mask = concat(features, "clip_mask")
        temperature = self.model.temperature()
        learned = isinstance(temperature, torch.Tensor)
        tau = temperature.detach().clone().requires_grad_() if learned else temperature
        terms: dict[str, torch.Tensor] = {}
        if "contrastive" in self.weights and self.moco is None:
            terms["contrastive"] = self.contrastive(leaves["text"], leaves["clips"], mask, tau).loss
        elif "contrastive" in self.weights:
            keys = (torch.cat([f.keys[0] for f in features]), torch.cat([f.keys[1] for f in features]))
            terms["contrastive"] = self.moco.loss(leaves["text"], leaves["clips"], mask, keys, tau)
            self.moco.enqueue(*keys, mask)
        if "lvwm" in self.weights:
            out = self.lvwm(leaves["words"], leaves["clips"], mask)
            terms["lvwm"] = out.loss
            metrics.update(in_batch_recall(out.text_to_video, out.targets, "lvwm"))
        if not terms:
            return {}, [{} for _ in features], None
        total = sum(self.weights[name] * loss for name, loss in terms.items())
        wrt = list(leaves.values()) + ([tau] if learned else [])
        found = torch.autograd.grad(total, wrt, allow_unused=True)
        sizes = [f.size for f in features]
        grads = [{} for _ in features]
        for name, grad in zip(leaves, found):
            if grad is not None:
                for j, part in enumerate(torch.split(grad, sizes)):
                    grads[j][name] = part
        values = {name: torch.tensor(global_sum(float(loss.detach()), self.world_size) / self.world_size,
                                     device=loss.device) for name, loss in terms.items()}
        return values, grads, (found[-1] if learned else None)

    def _plan_level2(self, plan: StepPlan, features: list[StepFeatures], similarity: torch.Tensor,
                     same: torch.Tensor | None, seed: int) -> None:
        """Hard negatives for every sample of the step; each rank scores (no gradient) the candidate pairs whose
        video it owns; every rank then has every score, the loss and d(loss)/d(score) of its own pairs."""
        total, micro = similarity.shape[0], features[0].size
        rows = torch.arange(total, device=similarity.device)
        generator = torch.Generator(device=similarity.device).manual_seed(stream_seed(seed, 29) % (1 << 63))
        ranking = mining_scores(similarity, self.level2.negatives, generator)  # the same draw on every rank
        mined = mine_hard_negatives(ranking, rows, self.level2.hard_negatives, same)
        k = mined.videos.shape[1]
        texts = torch.cat([rows[:, None], rows[:, None].expand(-1, k), mined.texts], dim=1)  # [N, 1 + 2k]
        videos = torch.cat([rows[:, None], mined.videos, rows[:, None].expand(-1, k)], dim=1)
        valid = torch.cat([torch.ones_like(rows[:, None], dtype=torch.bool), mined.video_valid, mined.text_valid], 1)
        owner_rank, owner_micro = pair_owner(videos, micro, self.world_size)
        records, picked = [], []
        for j, feats in enumerate(features):
            row, slot = (valid & (owner_rank == self.rank) & (owner_micro == j)).nonzero(as_tuple=True)
            order = torch.argsort((slot > 0).long() * total + row, stable=True)  # positives first, by video
            row, slot = row[order], slot[order]
            local = videos[row, slot] % micro
            seed = plan.fusion_seeds[j]["level2"]
            with seeded(seed, similarity.device), torch.no_grad():
                scores = self._pair_scores(plan, texts[row, slot], feats.tokens[local], feats.clip_mask[local])
            records += list(zip(row.tolist(), slot.tolist(), scores.float().cpu().tolist()))
            picked.append((row, slot, texts[row, slot], local, seed))
        scores = gather_pair_scores(records, total, 1 + 2 * k, self.world_size).to(similarity.device)
        leaf = scores.nan_to_num(0.0).requires_grad_()
        loss = mil_nce_candidates(leaf[:, 0], leaf[:, 1:1 + k], leaf[:, 1 + k:], valid[:, 1:1 + k], valid[:, 1 + k:])
        (weights,) = torch.autograd.grad(loss * self.weights["level2"], leaf)
        plan.level2 = [PairPlan(caption, local, weights[row, slot], seed) for row, slot, caption, local, seed in picked]
        plan.losses["level2"] = loss.detach()
        candidates = scores[:, :1 + k].masked_fill(~valid[:, :1 + k], float("-inf"))
        plan.metrics.update(in_batch_recall(candidates, torch.zeros_like(rows), "l2"))

    def _pair_scores(self, plan: StepPlan, captions: torch.Tensor, tokens: torch.Tensor,
                     clip_mask: torch.Tensor) -> torch.Tensor:
        """Level-2 logits of (caption of the step, clip tokens) pairs [P]."""
        if not len(captions):
            return tokens.new_zeros(0, dtype=torch.float32)
        fused = self.model.fuse(plan.ids[captions], plan.text_mask[captions], tokens, clip_mask)
        return self.model.match_score(fused.pooled).float()

    def _plan_vtm(self, plan: StepPlan, features: list[StepFeatures], similarity: torch.Tensor,
                  same: torch.Tensor | None, seed: int) -> None:
        """One negative caption per video of the step (hard under level 1, or random from the step's seed,
        the same choice on every rank); a video's pairs are scored by the micro-batch that holds it."""
        total, micro = similarity.shape[0], features[0].size
        rows = torch.arange(total, device=similarity.device)
        generator = torch.Generator(device=similarity.device).manual_seed(stream_seed(seed, 23) % (1 << 63))
        captions, valid = choose_negative_captions(rows, total, self.vtm.negatives, similarity, same, generator)
        captions = torch.where(valid, captions, torch.full_like(captions, -1))
        plan.vtm_captions = [captions[own_rows(self.rank, self.world_size, j, micro, captions.device)]
                             for j in range(len(features))]
        plan.vtm_total = int(total + valid.sum())

    # --- pass 2 ------------------------------------------------------------------------------------------
    def planned_forward(self, batch: VideoTextBatch, plan: StepPlan, micro: int) -> TaskOutput:
        """Micro-batch `micro` of a planned step: the cached gradients through its features, its own pairs and
        masked tokens; the value of `loss` is this micro-batch's share of the step's loss."""
        draw_base()  # the same first draw as in pass 1 (the plan holds what it gave)
        video, text = self._towers(batch, attentive=False)
        if plan.mlm_masks:  # the first pass's masks (attentive masking drew them from the text pass there)
            batch = dataclasses.replace(batch, mlm_ids=plan.mlm_masks[micro][0], mlm_labels=plan.mlm_masks[micro][1])
        live = {"text": text.global_feature.float(), "clips": video.clip_features.float()}
        if "lvwm" in self.weights:
            live["words"] = chosen_word_states(text.states, batch.word_positions).float()
        surrogate = sum((grad * live[name]).sum() for name, grad in plan.grads[micro].items()) * plan.micros
        if plan.temperature_grad is not None:
            surrogate = surrogate + (plan.temperature_grad * self.model.temperature()).sum()
        values = {name: plan.losses[name] for name in ("contrastive", "lvwm") if name in plan.losses}
        metrics = dict(plan.metrics)
        shares, pooled = self._planned_level2(batch, video, plan, micro, values)
        surrogate = surrogate + shares
        local: dict[str, torch.Tensor] = {}
        if "vtm" in self.weights:
            self._planned_vtm(batch, video, plan, micro, pooled, local, metrics)
        if "mlm" in self.weights or "text_mlm" in self.weights:
            with seeded(plan.fusion_seeds[micro]["mlm"], batch.frames.device):
                self._masked_terms(batch, video, text, local, metrics, normaliser=float(plan.mlm_total))
        for name, share in local.items():  # shares of global means, scaled like the engine's averaging
            surrogate = surrogate + self.weights[name] * share * plan.scale
            values[name] = share.detach() * plan.scale
        total_value = sum(self.weights[name] * value for name, value in values.items())
        loss = surrogate + (total_value - surrogate).detach()  # the gradient of the surrogate, the value of the loss
        return TaskOutput(loss, {name: value.detach() for name, value in values.items()}, metrics)

    def _planned_level2(self, batch: VideoTextBatch, video, plan: StepPlan, micro: int,
                        values: dict[str, torch.Tensor]) -> tuple[torch.Tensor | float, torch.Tensor | None]:
        """(level-2 surrogate, pooled positive pairs for VTM or None). Hard negatives: this micro-batch's pairs
        of the plan, scored again under the plan's seed, each back-propagating its cached weight. All local
        pairs: the reference's loss over this micro-batch's pairs, as its share of the step's mean."""
        if "level2" not in self.weights:
            return 0.0, None
        if self.level2.hard_negatives > 0:
            pairs = plan.level2[micro]
            with seeded(pairs.seed, batch.frames.device):
                fused = self.model.fuse(plan.ids[pairs.texts], plan.text_mask[pairs.texts], video.tokens[pairs.videos],
                                        batch.clip_mask[pairs.videos])
            scores = self.model.match_score(fused.pooled).float()
            values["level2"] = plan.losses["level2"]
            return (pairs.weights * scores).sum() * plan.scale, fused.pooled[:batch.num_videos]
        with seeded(plan.fusion_seeds[micro]["level2"], batch.frames.device):
            scores, positive = self._local_pair_scores(batch, video)
        share = mil_nce_all_pairs(scores) * batch.num_videos / (plan.world * plan.micros * batch.num_videos)
        values["level2"] = share.detach() * plan.scale
        return self.weights["level2"] * share * plan.scale, positive

    def _local_pair_scores(self, batch: VideoTextBatch, video) -> tuple[torch.Tensor, torch.Tensor]:
        """Level-2 logits of every (caption, video) pair of the micro-batch [B, B], and the positives' pooled."""
        size = batch.num_videos
        texts = torch.arange(size, device=batch.text_ids.device).repeat_interleave(size)
        videos = torch.arange(size, device=batch.text_ids.device).repeat(size)
        fused = self.model.fuse(batch.text_ids[texts], batch.text_mask[texts], video.tokens[videos],
                                batch.clip_mask[videos])
        scores = self.model.match_score(fused.pooled).float().view(size, size)
        return scores, fused.pooled.view(size, size, -1).diagonal(dim1=0, dim2=1).T

    def _planned_vtm(self, batch: VideoTextBatch, video, plan: StepPlan, micro: int, positive: torch.Tensor | None,
                     local: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor]) -> None:
        """Matched / not matched for this micro-batch's videos: its own captions and the negatives the plan
        chose from the whole step; the sum of the cross-entropies over the step's pair count."""
        captions = plan.vtm_captions[micro]
        chosen = (captions >= 0).nonzero(as_tuple=True)[0]
        with seeded(plan.fusion_seeds[micro]["vtm"], batch.frames.device):
            if positive is None:
                positive = self.model.fuse(batch.text_ids, batch.text_mask, video.tokens, batch.clip_mask).pooled
            negative = positive[:0]
            if len(chosen):
                caps = captions[chosen]
                negative = self.model.fuse(plan.ids[caps], plan.text_mask[caps], video.tokens[chosen],
                                           batch.clip_mask[chosen]).pooled
        logits = self.model.vtm_logits(torch.cat([positive, negative]))
        labels = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).long().to(logits.device)
        local["vtm"] = F.cross_entropy(logits, labels, reduction="sum") / max(plan.vtm_total, 1)
        metrics["vtm_acc"] = (logits.argmax(dim=1) == labels).float().mean().detach()
