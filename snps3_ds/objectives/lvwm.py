"""LVWM, local vision-word matching (REFERENCE §2.6 with the DESIGN §4.3 decision).

The text-pass states of W chosen (significant) words per caption are scored against every clip
feature; a caption's score for a clip is the logsumexp over its words, and MIL-NCE runs over the
GLOBAL batch. **Decision:** word states and clip features are both L2-normalised and divided by a
temperature (the reference mixes unnormalised states with unit clip features, so its logit scale is
the BERT state norm). With several clips per video, every real clip of the own video is a positive
(logsumexp over them, as level 1) instead of the reference's "middle clip only", which is undefined
for padded (image) clips; with one clip per video the two coincide:

    loss_i = -log( sum_c exp s(i,i,c) / ( sum_{k,c} exp s(k,i,c) + sum_{j != i, c} exp s(i,j,c) ) )

Features are gathered with gradient; each rank computes its local rows (its captions against every
video, every caption against its videos), so the summed gradient equals the full-batch one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from snps3_ds.distributed import gather_no_grad, gather_with_grad
from snps3_ds.objectives import upcast
from snps3_ds.objectives.contrastive import NEG_INF


@dataclass
class LVWMOutput:
    loss: torch.Tensor
    text_to_video: torch.Tensor  # [B, B_all] detached: logsumexp over clips of the word-clip score
    targets: torch.Tensor  # [B] global column of each local caption's video


def chosen_word_states(states: torch.Tensor, word_positions: torch.Tensor | None) -> torch.Tensor:
    """[N, L, H] text-pass states -> [N, W, H] at the loader's chosen positions."""
    if word_positions is None:
        raise ValueError("objectives.lvwm > 0 needs batch.word_positions, but the loader chose no words: "
                         "set masking.kind=mssm (the loader then picks the significant words), or objectives.lvwm=0")
    rows = torch.arange(states.shape[0], device=states.device)[:, None]
    return states[rows, word_positions.to(states.device)]


def word_clip_logits(words: torch.Tensor, clips: torch.Tensor, clip_mask: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Unit words [N, W, D] x unit clips [B, T, D] -> [N, B, T]: logsumexp over words of cos / temperature,
    padded clips at NEG_INF."""
    logits = torch.einsum("nwd,btd->nbtw", words, clips) / temperature
    return torch.logsumexp(logits, dim=-1).masked_fill(~clip_mask.bool()[None], NEG_INF)


class LVWMLoss(nn.Module):
    def __init__(self, temperature: float = 0.05, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.temperature, self.rank, self.world_size = temperature, rank, world_size

    def forward(self, words: torch.Tensor, clips: torch.Tensor, clip_mask: torch.Tensor) -> LVWMOutput:
        """words [B, W, H] (raw text-pass states of the chosen words), clips [B, T, H], clip_mask [B, T]."""
        words = F.normalize(upcast(words), dim=-1)
        clips = F.normalize(upcast(clips), dim=-1)
        batch = clips.shape[0]
        all_words = gather_with_grad(words, self.rank, self.world_size)
        all_clips = gather_with_grad(clips, self.rank, self.world_size)
        all_mask = gather_no_grad(clip_mask.float(), self.world_size).bool()
        local = torch.arange(batch, device=words.device)
        own = local + self.rank * batch

        rows = word_clip_logits(words, all_clips, all_mask, self.temperature)  # local captions x all videos
        columns = word_clip_logits(all_words, clips, clip_mask, self.temperature)  # all captions x local videos
        positive = torch.logsumexp(rows[local, own], dim=-1)
        others = rows.masked_fill(F.one_hot(own, rows.shape[1]).bool()[..., None], NEG_INF)
        denominator = torch.cat([columns.transpose(0, 1).flatten(1), others.flatten(1)], dim=1)
        loss = (torch.logsumexp(denominator, dim=1) - positive).mean()
        return LVWMOutput(loss, torch.logsumexp(rows, dim=-1).detach(), own)
