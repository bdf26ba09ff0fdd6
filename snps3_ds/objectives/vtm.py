"""Video-text matching (VTM, the reference's ITM): matched / not matched on the fusion pooled output.

Each video is fused with its own caption (positive) and with one other caption of the global batch
(negative): a random one (the reference draws a random false caption) or the hardest one under the
level-1 similarity. **Decision** (DESIGN §4.3): positives and negatives both use the UNMASKED caption,
removing the reference's masked-positive vs unmasked-negative shortcut. Captions token-identical to
the video's own are never negatives (they describe it as well).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from snps3_ds.objectives import upcast
from snps3_ds.objectives.matching import blocked_pairs


@dataclass
class VTMOutput:
    loss: torch.Tensor
    accuracy: torch.Tensor


def choose_negative_captions(rows: torch.Tensor, num_texts: int, mode: str, similarity: torch.Tensor | None = None,
                             same_caption: torch.Tensor | None = None, generator: torch.Generator | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One negative caption (global index) per local video at global indices `rows` [B], and a validity
    mask [B] (False when every other caption is identical to the video's own)."""
    blocked = blocked_pairs(num_texts, same_caption, rows.device)[:, rows].T  # [B, N_all]: caption j for video i
    if mode == "hard":
        if similarity is None:
            raise ValueError("VTM hard negatives need the global level-1 similarity")
        best, texts = upcast(similarity[:, rows].T).masked_fill(blocked, float("-inf")).max(dim=1)
        return texts, best > float("-inf")
    if mode != "random":
        raise ValueError(f"objectives.vtm_negatives: expected 'random' or 'hard', got {mode!r}")
    weights = (~blocked).float()
    valid = weights.sum(dim=1) > 0
    weights[~valid, 0] = 1.0  # a placeholder draw, dropped by `valid`
    return torch.multinomial(weights, 1, generator=generator).squeeze(1), valid


def vtm_loss(positive_logits: torch.Tensor, negative_logits: torch.Tensor) -> VTMOutput:
    """Cross-entropy over B matched [B, 2] and M unmatched [M, 2] logits (class 1 = matched), fp32."""
    logits = upcast(torch.cat([positive_logits, negative_logits]))
    labels = torch.cat([torch.ones(len(positive_logits)), torch.zeros(len(negative_logits))]).long()
    labels = labels.to(logits.device)
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return VTMOutput(F.cross_entropy(logits, labels), accuracy.detach())


class VTMLoss(nn.Module):
    def __init__(self, negatives: str = "random", rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if negatives not in ("random", "hard"):
            raise ValueError(f"objectives.vtm_negatives: expected 'random' or 'hard', got {negatives!r}")
        self.negatives, self.rank, self.world_size = negatives, rank, world_size

    def negatives_for(self, batch: int, similarity: torch.Tensor | None, same_caption: torch.Tensor | None,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(local video indices, global caption indices) of the negative pairs, and the local videos' global rows."""
        rows = self.rank * batch + torch.arange(batch, device=device)
        texts, valid = choose_negative_captions(rows, batch * self.world_size, self.negatives, similarity,
                                                same_caption)
        return valid.nonzero(as_tuple=True)[0], texts[valid], rows

    def forward(self, positive_logits: torch.Tensor, negative_logits: torch.Tensor) -> VTMOutput:
        return vtm_loss(positive_logits, negative_logits)
