"""Global negatives across gradient accumulation: what the pre-training task computes once per optimiser step.

With `k` micro-batches per rank in a step, the gathered objectives (level-1 contrastive or MoCo, LVWM) are
computed over the whole step — k x micro x world samples — from features a first pass made without gradient
(feature caching, as GradCache and open_clip's `--accum-freq`). The gradients of those losses w.r.t. this
rank's features are kept; when each micro-batch runs again with gradient (the same random state, so the
same dropout), it back-propagates `<cached gradient, feature>` instead of the loss itself.

Level-2 matching with hard negatives pairs a caption with videos of any micro-batch on any rank. Its loss is a
softmax over each sample's candidate pairs, so its gradient w.r.t. a pair's fusion score is a number known
once every candidate was scored: the plan scores them all without gradient (each rank the pairs whose VIDEO
it owns, a fixed random seed per micro-batch), and the second pass scores the same pairs again with gradient
and back-propagates `weight x score`. VTM's negatives, chosen from the whole step, always pair a caption with a
video of the micro-batch that is running, so it needs nothing cached.

Every mean is over the whole step: sums over this rank's part divided by global counts, times
world x k, because the engine averages gradients over ranks and divides by the accumulation steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from snps3_ds.distributed import gather_no_grad, gather_objects


@dataclass
class StepFeatures:
    """One micro-batch's first pass (detached): what the gathered objectives and the plan need."""

    text: torch.Tensor  # [B, D] L2-normalised global text features (fp32)
    clips: torch.Tensor  # [B, T, D] L2-normalised clip features (fp32)
    clip_mask: torch.Tensor  # [B, T] bool
    ids: torch.Tensor  # [B, L] unmasked caption ids (fusion pairs name captions by them)
    text_mask: torch.Tensor  # [B, L]
    words: torch.Tensor | None = None  # [B, W, H] text-pass states of the LVWM words (fp32)
    tokens: torch.Tensor | None = None  # [B, T*S, H] fusion clip tokens (level-2 pre-scores)
    mlm_ids: torch.Tensor | None = None  # [B, L] the masked ids the second pass must use (attentive masking)
    mlm_labels: torch.Tensor | None = None
    keys: tuple[torch.Tensor, torch.Tensor] | None = None  # MoCo momentum keys (text [B, D], clips [B, T, D])
    seed: int = 0  # the micro-batch's base seed (snps3_ds.tasks.seeding), the same in pass 2

    @property
    def size(self) -> int:
        return self.text.shape[0]


@dataclass
class PairPlan:
    """The level-2 pairs one micro-batch scores: its own videos with captions of the whole step."""

    texts: torch.Tensor  # [P] global caption indices
    videos: torch.Tensor  # [P] video indices inside the micro-batch
    weights: torch.Tensor  # [P] d(level-2 loss)/d(score) (fp32, all weights of the step already applied)
    seed: int  # the fusion pass's random seed, the same in the plan and in the second pass


@dataclass
class StepPlan:
    """Everything the second pass of micro-batch j needs; `losses` are the step's global values."""

    world: int
    micros: int  # k
    losses: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor]
    grads: list[dict[str, torch.Tensor]]  # per micro: gradient of the weighted gathered loss per feature field
    temperature_grad: torch.Tensor | None  # this rank's share of d(loss)/d(learned temperature)
    ids: torch.Tensor  # [N, L] every caption of the step, all ranks (for fusing other samples' captions)
    text_mask: torch.Tensor  # [N, L]
    level2: list[PairPlan] = field(default_factory=list)
    vtm_captions: list[torch.Tensor] = field(default_factory=list)  # per micro: [B] global caption or -1
    vtm_total: int = 0  # positive + negative VTM pairs in the step
    mlm_total: int = 0  # masked tokens in the step (all ranks)
    mlm_masks: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # per micro: (ids, labels)
    fusion_seeds: list[dict[str, int]] = field(default_factory=list)  # per micro: seed per fusion pass (seeding)

    @property
    def scale(self) -> float:
        """world x k: the engine averages over ranks and divides by the accumulation steps."""
        return float(self.world * self.micros)


def concat(features: list[StepFeatures], name: str) -> torch.Tensor | None:
    values = [getattr(f, name) for f in features]
    return None if any(v is None for v in values) else torch.cat(values)


def gathered(features: list[StepFeatures], name: str, world: int) -> torch.Tensor | None:
    """Every rank's micro-batches in the step's global order: micro-batch j of rank r is the step's global
    micro-batch j x world + r (how the training stream deals them), so global index = (j x world + r) x B + i."""
    local = concat(features, name)
    if local is None:
        return None
    flag = local.dtype == torch.bool
    every = gather_no_grad((local.float() if flag else local).contiguous(), world)
    micros, size = len(features), features[0].size
    every = every.view(world, micros, size, *local.shape[1:]).transpose(0, 1).reshape(every.shape)
    return every.bool() if flag else every


def own_rows(rank: int, world: int, micro: int, size: int, device: torch.device) -> torch.Tensor:
    """Global indices of this rank's micro-batch `micro` (see gathered)."""
    return (micro * world + rank) * size + torch.arange(size, device=device)


def global_sum(value: float | int, world: int) -> float:
    """The sum of a number over ranks (one all_reduce)."""
    if world == 1:
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item())


def split_rows(tensor: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(torch.split(tensor, sizes))


def pair_owner(videos: torch.Tensor, size: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(owning rank, owning micro-batch) of global video indices (see gathered); micro-batches of `size`."""
    global_micro = videos // size
    return global_micro % world, global_micro // world


def scores_from_records(records: list[list[tuple[int, int, float]]], rows: int, slots: int) -> torch.Tensor:
    """The [rows, slots] candidate-score matrix from every rank's (row, slot, score) records."""
    scores = torch.full((rows, slots), float("nan"), dtype=torch.float32)
    for part in records:
        for row, slot, value in part:
            scores[row, slot] = value
    return scores


def gather_pair_scores(mine: list[tuple[int, int, float]], rows: int, slots: int, world: int) -> torch.Tensor:
    """Every rank scored the candidates whose video it owns; every rank gets the whole matrix."""
    return scores_from_records(gather_objects(mine, world), rows, slots)
