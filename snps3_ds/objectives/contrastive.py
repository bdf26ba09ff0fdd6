"""GVTM level 1: global vision-text InfoNCE, text<->clip both ways, multi-positive over a video's clips.

Negatives are the global batch: features are gathered with gradient and each rank scores its local
rows against all columns, so memory is linear in the global batch and a larger DeepSpeed batch means
more negatives (DESIGN §4.3). All math runs in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from snps3_ds.distributed import gather_no_grad, gather_with_grad
from snps3_ds.objectives import upcast

NEG_INF = -1e4  # large enough to vanish under exp at the temperatures used, finite in every dtype


@dataclass
class ContrastiveOutput:
    loss: torch.Tensor
    text_to_video: torch.Tensor  # [N_local, B_global] detached scores: logsumexp over clips of cos/T
    targets: torch.Tensor  # [N_local] column of each local text's video in the global batch


class GlobalContrastiveLoss(nn.Module):
    """Symmetric InfoNCE between caption features [N, D] and clip features [B, T, D].

    text->video: each text is a query over every clip of every video in the global batch; its positives
    are all clips of its own video (logsumexp over them, the reference's MIL form).
    video->text: every real clip is a query over all global texts; its positive is its video's caption.
    The returned loss is this rank's share times the world size: its mean over ranks is the global loss.
    """

    def __init__(self, temperature: float, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.temperature, self.rank, self.world_size = temperature, rank, world_size

    def forward(self, text: torch.Tensor, clips: torch.Tensor, clip_mask: torch.Tensor,
                temperature: torch.Tensor | float | None = None) -> ContrastiveOutput:
        """`temperature` overrides the constructor's (a learned one is a tensor and receives a gradient)."""
        temperature = self.temperature if temperature is None else temperature
        text, clips = upcast(text), upcast(clips)
        batch = clips.shape[0]
        if text.shape[0] != batch:
            raise ValueError(f"training batches pair one caption per video; got {text.shape[0]} texts for {batch} videos")
        all_text = gather_with_grad(text, self.rank, self.world_size)
        all_clips = gather_with_grad(clips, self.rank, self.world_size)
        all_mask = gather_no_grad(clip_mask.float(), self.world_size).bool()
        offset = self.rank * batch
        local = torch.arange(batch, device=text.device)

        # text -> video: local texts against every global clip  [N, B_all, T]
        t2c = clip_logits(text, all_clips, all_mask, temperature)
        positives = torch.logsumexp(t2c[local, local + offset], dim=-1)
        loss_t2v = (torch.logsumexp(t2c.flatten(1), dim=-1) - positives).mean()

        # video -> text: local clips against every global text  [B, T, N_all]
        c2t = torch.einsum("btd,nd->btn", clips, all_text) / temperature
        own = c2t[local, :, local + offset]  # [B, T]
        per_clip = torch.logsumexp(c2t, dim=-1) - own
        # A mean over every rank's real clips: ranks may hold different numbers of them (images beside videos),
        # so this rank's sum is divided by the global count and multiplied by the world size, and the engine's
        # mean over ranks is the full-batch loss.
        loss_v2t = per_clip[clip_mask].sum() * self.world_size / all_mask.sum().clamp(min=1)

        scores = torch.logsumexp(t2c, dim=-1).detach()
        return ContrastiveOutput((loss_t2v + loss_v2t) / 2, scores, local + offset)


def clip_logits(text: torch.Tensor, clips: torch.Tensor, clip_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """cos(text n, clip t of video b) / temperature as [N, B, T], padded clips at NEG_INF (fp32)."""
    logits = torch.einsum("nd,btd->nbt", upcast(text), upcast(clips)) / temperature
    return logits.masked_fill(~clip_mask.bool()[None], NEG_INF)


def text_video_scores(text: torch.Tensor, clips: torch.Tensor, clip_mask: torch.Tensor, temperature: float
                      ) -> torch.Tensor:
    """Dual-encoder score of every text-video pair [N, B]: logsumexp over the video's clips, as in training."""
    return torch.logsumexp(clip_logits(text, clips, clip_mask, temperature), dim=-1)


@torch.no_grad()
def global_text_video_scores(text: torch.Tensor, clips: torch.Tensor, clip_mask: torch.Tensor,
                             temperature: torch.Tensor | float, world_size: int = 1) -> torch.Tensor:
    """Detached level-1 scores of every text-video pair of the GLOBAL batch [N_all, B_all] (ranks in order).

    Used for the in-batch metrics and for mining hard negatives (level 2, VTM); every rank holds the same
    matrix, so the choices are the ones a single process would make on the concatenated batch.
    """
    all_text = gather_no_grad(upcast(text).contiguous(), world_size)
    all_clips = gather_no_grad(upcast(clips).contiguous(), world_size)
    all_mask = gather_no_grad(clip_mask.float(), world_size).bool()
    temperature = temperature.detach() if isinstance(temperature, torch.Tensor) else temperature
    return text_video_scores(all_text, all_clips, all_mask, temperature)
