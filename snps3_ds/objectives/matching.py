"""GVTM level 2: text-video pairs scored by the fusion encoder (similarity_dense), trained with MIL-NCE.

The reference scores every pair of the local batch and applies (REFERENCE §2.2, n = 1)

    loss_i = -log( exp s(i,i) / ( sum_k exp s(k,i) + sum_{j != i} exp s(i,j) ) )

i.e. one softmax per sample over "all texts vs video i" and "text i vs all other videos", no temperature.
That costs B^2 fusion passes. **Decision** (DESIGN §4.3): with `hard_negatives = k`, the candidate sets
shrink to the positive, k hard videos for text i and k hard captions for video i, mined from the global
level-1 similarities (negatives may be any rank's), so the cost is B (1 + 2k) passes; the formula is the
same over the candidate sets. Scores come from a callable so the math is testable without a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from snps3_ds.objectives import upcast

PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(text indices [P], video indices [P]) in the GLOBAL batch -> one score per pair [P]."""


@dataclass
class HardNegatives:
    videos: torch.Tensor  # [B, k] global video indices, hardest first, for each local text
    texts: torch.Tensor  # [B, k] global text indices, hardest first, for each local video
    video_valid: torch.Tensor  # [B, k] False where too few real negatives existed
    text_valid: torch.Tensor  # [B, k]


@dataclass
class MatchingOutput:
    loss: torch.Tensor
    video_scores: torch.Tensor  # [B, C] detached scores of each local text against its candidate videos
    targets: torch.Tensor  # [B] column of the positive in video_scores


def blocked_pairs(size: int, same_caption: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """[N, N] True where a pair may not serve as a negative: itself, or a token-identical caption."""
    blocked = torch.eye(size, dtype=torch.bool, device=device)
    return blocked if same_caption is None else blocked | same_caption.bool()


def mine_hard_negatives(similarity: torch.Tensor, rows: torch.Tensor, k: int,
                        same_caption: torch.Tensor | None = None) -> HardNegatives:
    """Top-k videos per text row and top-k texts per video column of the global level-1 similarity
    [N_all, B_all] (detached), for the local samples at global indices `rows` [B]."""
    k = min(k, similarity.shape[1] - 1)
    blocked = blocked_pairs(similarity.shape[0], same_caption, similarity.device)
    by_text = upcast(similarity[rows]).masked_fill(blocked[rows], float("-inf"))
    by_video = upcast(similarity[:, rows].T).masked_fill(blocked[:, rows].T, float("-inf"))
    video_scores, videos = by_text.topk(k, dim=1)
    text_scores, texts = by_video.topk(k, dim=1)
    return HardNegatives(videos, texts, video_scores > float("-inf"), text_scores > float("-inf"))


NEGATIVE_KINDS = ("hard", "random", "sampled")


def check_negatives(negatives: str) -> None:
    if negatives not in NEGATIVE_KINDS:
        raise ValueError(f"objectives.level2_negatives: expected one of {', '.join(NEGATIVE_KINDS)}, "
                         f"got {negatives!r}")


def mining_scores(similarity: torch.Tensor, negatives: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """What `mine_hard_negatives` ranks by: the level-1 similarity (hard), uniform random scores of the same
    shape (random: its top-k are k random distinct candidates), or the similarity plus Gumbel noise (sampled:
    its top-k are k distinct draws with probability softmax(similarity), ALBEF's hard-negative sampling, so a
    candidate the dual encoder rates likely is drawn often but never always). Blocked pairs stay excluded."""
    if negatives == "hard":
        return similarity
    check_negatives(negatives)
    uniform = torch.rand(similarity.shape, generator=generator, device=similarity.device)
    if negatives == "random":
        return uniform
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-12, 1.0 - 1e-7)))
    return upcast(similarity) + gumbel


def mil_nce_all_pairs(scores: torch.Tensor) -> torch.Tensor:
    """The reference closed form over a full [B, B] score matrix (row i = text i, column j = video j)."""
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    scores = upcast(scores)
    denominator = torch.cat([scores.T, scores.masked_fill(eye, float("-inf"))], dim=1)
    return (torch.logsumexp(denominator, dim=1) - scores.diagonal()).mean()


def mil_nce_candidates(positive: torch.Tensor, video_negatives: torch.Tensor, text_negatives: torch.Tensor,
                       video_valid: torch.Tensor, text_valid: torch.Tensor) -> torch.Tensor:
    """The same form over candidate sets: positive [B], scores of text i vs its negative videos [B, k]
    and of the negative captions vs video i [B, k]; invalid candidates are left out."""
    logits = torch.cat([upcast(positive)[:, None],
                        upcast(video_negatives).masked_fill(~video_valid, float("-inf")),
                        upcast(text_negatives).masked_fill(~text_valid, float("-inf"))], dim=1)
    return (torch.logsumexp(logits, dim=1) - upcast(positive)).mean()


class CrossMatchingLoss(nn.Module):
    def __init__(self, hard_negatives: int = 0, rank: int = 0, world_size: int = 1, negatives: str = "hard") -> None:
        super().__init__()
        self.hard_negatives, self.rank, self.world_size = hard_negatives, rank, world_size
        check_negatives(negatives)  # fail at construction, not mid-run
        self.negatives = negatives

    def forward(self, score: PairScorer, positive: torch.Tensor, similarity: torch.Tensor | None = None,
                same_caption: torch.Tensor | None = None) -> MatchingOutput:
        """positive [B]: scores of (caption i, video i), computed by the caller (shared with VTM).

        similarity [N_all, B_all] (detached level-1 scores) and same_caption [N_all, N_all] are needed
        only for hard negatives.
        """
        batch = positive.shape[0]
        score = _skip_empty(score, positive)
        rows = self.rank * batch + torch.arange(batch, device=positive.device)
        if self.hard_negatives == 0:
            eye = torch.eye(batch, dtype=torch.bool, device=positive.device)
            text_idx, video_idx = (~eye).nonzero(as_tuple=True)
            off_diagonal = upcast(score(rows[text_idx], rows[video_idx]))
            scores = off_diagonal.new_zeros(batch, batch).masked_scatter(~eye, off_diagonal)
            scores = scores + torch.diag(upcast(positive))
            targets = torch.arange(batch, device=positive.device)
            return MatchingOutput(mil_nce_all_pairs(scores), scores.detach(), targets)
        if similarity is None:
            raise ValueError("level-2 hard negatives need the global level-1 similarity")
        mined = mine_hard_negatives(mining_scores(similarity, self.negatives), rows, self.hard_negatives, same_caption)
        k = mined.videos.shape[1]
        own = rows[:, None].expand(-1, k)
        video_negatives = score(own.flatten(), mined.videos.flatten()).view(batch, k)
        text_negatives = score(mined.texts.flatten(), own.flatten()).view(batch, k)
        loss = mil_nce_candidates(positive, video_negatives, text_negatives, mined.video_valid, mined.text_valid)
        candidates = torch.cat([upcast(positive)[:, None],
                                upcast(video_negatives).masked_fill(~mined.video_valid, float("-inf"))], dim=1)
        return MatchingOutput(loss, candidates.detach(), torch.zeros_like(rows))


def _skip_empty(score: PairScorer, like: torch.Tensor) -> PairScorer:
    """A batch of one has no negatives: do not run the fusion encoder on zero pairs."""
    def wrapped(texts: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
        return score(texts, videos) if texts.numel() else like.new_zeros(0, dtype=torch.float32)
    return wrapped
