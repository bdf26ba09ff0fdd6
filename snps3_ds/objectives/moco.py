"""GVTM level 1 with MoCo queues (REFERENCE §2.1), an option for small global batches.

Momentum ("key") copies of the towers that make the contrastive features (backbone + temporal encoder +
img_fc, and the whole text BERT) are created when the task is built, so the engine sees them from the
start; they are never trained (requires_grad=False) and follow the query towers as an exponential
moving average. Their weights are (re)synchronised from the query towers at the first training step,
so weights loaded after construction are honoured, and a resumed checkpoint keeps its own copies.

The EMA lives in one flat fp32 buffer: a momentum of 0.9999 moves a weight by 1e-4 of the gap per step,
which bf16 (8 mantissa bits) would round away. DeepSpeed's bf16 casts parameters and (with buffer_dtype)
buffers; `_keep_in_fp32_modules_strict` asks it to keep `ema` and the queues in fp32, and an `ema` that an
engine cast anyway is made fp32 again at the next step. The key towers' own parameters follow the
engine's dtype and are refreshed from the EMA after each update.

Queues are seeded identically on every rank; each step enqueues the keys of the whole global batch. The
momentum update runs once per optimiser step (with accumulation k, not k times).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from snps3_ds.distributed import gather_no_grad
from snps3_ds.models.snp import text_features, video_features
from snps3_ds.objectives import upcast
from snps3_ds.objectives.contrastive import NEG_INF

if TYPE_CHECKING:
    from snps3_ds.data.batch import VideoTextBatch


@dataclass
class MocoTerms:
    """The two directions of the MoCo loss as sums and counts, so a caller can normalise by global counts."""

    t2v_sum: torch.Tensor
    t2v_count: int
    v2t_sum: torch.Tensor
    v2t_count: int

    def mean(self, t2v_total: float | None = None, v2t_total: float | None = None) -> torch.Tensor:
        """(t2v mean + v2t mean) / 2, each mean over `*_total` queries (default: these terms' own counts)."""
        t2v = self.t2v_sum / max(t2v_total or self.t2v_count, 1)
        v2t = self.v2t_sum / max(v2t_total or self.v2t_count, 1)
        return (t2v + v2t) / 2


def moco_terms(text_q: torch.Tensor, clip_q: torch.Tensor, clip_mask: torch.Tensor, text_k: torch.Tensor,
               clip_k: torch.Tensor, queues: tuple[torch.Tensor, torch.Tensor],
               temperature: torch.Tensor | float) -> MocoTerms:
    """The reference's MoCo level-1 loss (fp32); queries carry the gradient, keys and queues do not.

    video->text: every real clip is a query; positive: its caption's key; negatives: the text queue.
    text->video: every caption is a query; positives: the keys of its video's real clips (logsumexp,
    the MIL form); negatives: the (clip-level) video queue. `queues` is (text queue, video queue).
    """
    text_queue, video_queue = queues
    text_q, clip_q = upcast(text_q), upcast(clip_q)
    text_k, clip_k = upcast(text_k).detach(), upcast(clip_k).detach()
    mask = clip_mask.bool()
    pos_v = torch.einsum("btd,bd->bt", clip_q, text_k) / temperature  # [B, T]
    neg_v = torch.einsum("btd,kd->btk", clip_q, upcast(text_queue)) / temperature  # [B, T, K]
    per_clip = torch.logsumexp(torch.cat([pos_v[..., None], neg_v], dim=-1), dim=-1) - pos_v
    pos_t = (torch.einsum("bd,btd->bt", text_q, clip_k) / temperature).masked_fill(~mask, NEG_INF)  # [B, T]
    neg_t = text_q @ upcast(video_queue).T / temperature  # [B, K]
    per_text = torch.logsumexp(torch.cat([pos_t, neg_t], dim=1), dim=1) - torch.logsumexp(pos_t, dim=1)
    return MocoTerms(per_text.sum(), per_text.shape[0], per_clip[mask].sum(), int(mask.sum()))


def moco_loss(text_q: torch.Tensor, clip_q: torch.Tensor, clip_mask: torch.Tensor, text_k: torch.Tensor,
              clip_k: torch.Tensor, text_queue: torch.Tensor, video_queue: torch.Tensor,
              temperature: torch.Tensor | float) -> torch.Tensor:
    """The MoCo loss of one batch on its own (its means over its own queries)."""
    return moco_terms(text_q, clip_q, clip_mask, text_k, clip_k, (text_queue, video_queue), temperature).mean()


class MomentumEncoder(nn.Module):
    """Momentum copies of named towers (the dict SNPModel.momentum_towers() returns)."""

    _keep_in_fp32_modules_strict = ["ema"]

    def __init__(self, towers: dict[str, nn.Module], momentum: float) -> None:
        super().__init__()
        self.towers = nn.ModuleDict({name: copy.deepcopy(tower) for name, tower in towers.items()})
        self.towers.requires_grad_(False)
        self.momentum = momentum
        self.register_buffer("ema", torch.cat([p.detach().float().flatten() for p in self.towers.parameters()]))
        self.register_buffer("synced", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, towers: dict[str, nn.Module]) -> None:
        """ema <- m ema + (1 - m) query (a copy at the first step); then the key towers take the EMA."""
        query = [p for name in self.towers for p in towers[name].parameters()]
        keys = list(self.towers.parameters())
        if len(query) != len(keys):
            raise ValueError("MoCo: the query towers no longer match their momentum copies")
        if self.ema.dtype != torch.float32:
            self.ema = self.ema.float()
        views = self.ema.split([p.numel() for p in keys])
        for view, q, k in zip(views, query, keys):
            view = view.view(k.shape)
            if bool(self.synced):
                view.lerp_(q.detach().float(), 1.0 - self.momentum)
            else:
                view.copy_(q.detach().float())
            k.copy_(view)
        self.synced.fill_(True)

    def video(self, frames: torch.Tensor, clip_mask: torch.Tensor) -> torch.Tensor:
        t = self.towers
        temporal = t["temporal"] if "temporal" in t else None
        return video_features(t["visual"], temporal, t["img_fc"], frames, clip_mask).clip_features

    def text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return text_features(self.towers["bert"], ids, mask).global_feature


class MomentumContrast(nn.Module):
    _keep_in_fp32_modules_strict = ["queue"]

    def __init__(self, towers: dict[str, nn.Module], dim: int, queue_size: int, momentum: float,
                 rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size
        self.keys = MomentumEncoder(towers, momentum)
        gen = torch.Generator().manual_seed(seed)  # the same queues on every rank
        self.register_buffer("text_queue", F.normalize(torch.randn(queue_size, dim, generator=gen), dim=-1))
        self.register_buffer("video_queue", F.normalize(torch.randn(queue_size, dim, generator=gen), dim=-1))
        self.register_buffer("text_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("video_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, towers: dict[str, nn.Module]) -> None:
        """The momentum step: once per optimiser step (the query towers change only then)."""
        self.keys.update(towers)

    @torch.no_grad()
    def keys_for(self, frames: torch.Tensor, clip_mask: torch.Tensor, ids: torch.Tensor,
                 text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(text keys [B, D], clip keys [B, T, D]) of a batch from the momentum towers."""
        return self.keys.text(ids, text_mask), self.keys.video(frames, clip_mask)

    def loss(self, text_q: torch.Tensor, clip_q: torch.Tensor, clip_mask: torch.Tensor,
             keys: tuple[torch.Tensor, torch.Tensor], temperature: torch.Tensor | float) -> torch.Tensor:
        """This rank's share of the loss over every rank's queries: its sums over the GLOBAL query counts,
        times the world size, so the engine's mean over ranks is the full-batch loss (ranks may hold
        different numbers of real clips, e.g. images beside videos)."""
        # clones: the queues change in place later, after autograd has saved them for backward
        terms = moco_terms(text_q, clip_q, clip_mask, *keys, (self.text_queue.clone(), self.video_queue.clone()),
                           temperature)
        counts = torch.tensor([terms.t2v_count, terms.v2t_count], dtype=torch.float64)
        if self.world_size > 1:
            torch.distributed.all_reduce(counts)
        return terms.mean(float(counts[0]), float(counts[1])) * self.world_size

    def forward(self, towers: dict[str, nn.Module], queries: tuple[torch.Tensor, torch.Tensor],
                batch: "VideoTextBatch", temperature: torch.Tensor | float, update: bool = True) -> torch.Tensor:
        """One micro-batch on its own: momentum update (when `update`: the first micro-batch of an optimiser
        step, in training), keys, the loss against the queues, then enqueue this micro-batch's keys."""
        if self.training and update:
            self.update(towers)
        keys = self.keys_for(batch.frames, batch.clip_mask, batch.text_ids, batch.text_mask)
        loss = self.loss(*queries, batch.clip_mask, keys, temperature)
        if self.training:
            self.enqueue(*keys, batch.clip_mask)
        return loss

    @torch.no_grad()
    def enqueue(self, text_k: torch.Tensor, clip_k: torch.Tensor, clip_mask: torch.Tensor) -> None:
        """FIFO ring over the gathered keys of every rank (real clips only, clip-level as the reference)."""
        texts = gather_no_grad(upcast(text_k).contiguous(), self.world_size)
        clips = gather_no_grad(upcast(clip_k).contiguous(), self.world_size)
        mask = gather_no_grad(clip_mask.float(), self.world_size).bool()
        _push(self.text_queue, self.text_ptr, texts)
        _push(self.video_queue, self.video_ptr, clips[mask])


def _push(queue: torch.Tensor, pointer: torch.Tensor, keys: torch.Tensor) -> None:
    size = queue.shape[0]
    keys = keys[-size:]
    slots = (pointer + torch.arange(keys.shape[0], device=queue.device)) % size
    queue[slots] = keys.to(queue.dtype)
    pointer.copy_((pointer + keys.shape[0]) % size)
