"""MSSM masking, LVWM word choice and attentive masking (DESIGN §3.3; REFERENCE §2.4-2.6, §8 items 6-8).

MSSM masks m = floor(p n) + [frac(p n) >= 0.3] of a caption's n tokens, taken from its significant words
(mined rank <= K, as the reference) first and only then from its other tokens, which keep their true labels (the reference
labels those [MASK] and picks the wrong positions). Chosen tokens become [MASK] (80%), a lemma variant of a
random significant word (10%; the word itself when it has no variants, not the reference's first
character) or stay (10%). Every draw comes from an explicit torch.Generator (on the CPU or the ids'
device) and is vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from snps3_ds.config import MaskingConfig
from snps3_ds.data.text.significance import SignificanceError, SignificanceTable, load_significance
from snps3_ds.data.text.tokens import IGNORE_INDEX, SpecialIds

ROUND_UP_FRACTION = 0.3  # the reference rounds p*n up when its fractional part reaches 0.3


@dataclass(frozen=True)
class MssmVocab:
    """What MSSM and LVWM need from a mined table at one K, as tensors."""

    significant: torch.Tensor  # bool [V]
    significant_ids: torch.Tensor  # long [S]
    variant_ids: torch.Tensor  # long [S, P]: lemma variants of each significant id, row padded by repetition
    variant_counts: torch.Tensor  # long [S], >= 1 (a word without variants stands for itself)

    @classmethod
    def from_table(cls, table: SignificanceTable, top_k: int) -> "MssmVocab":
        significant_ids = table.significant_ids(top_k)
        if len(significant_ids) == 0:
            raise SignificanceError(f"{table.directory}: the table ranks no token (was the corpus empty?)")
        rows = [table.lemma_variants(int(i)) or (int(i),) for i in significant_ids]
        width = max(len(row) for row in rows)
        padded = [list(row) * (width // len(row)) + list(row[: width % len(row)]) for row in rows]
        return cls(table.significant_mask(top_k), significant_ids, torch.tensor(padded, dtype=torch.long),
                   torch.tensor([len(row) for row in rows], dtype=torch.long))

    @classmethod
    def load(cls, directory: str | Path, top_k: int, vocab: list[str] | None = None) -> "MssmVocab":
        """From a mined folder (parsed once per process); checks it was mined with `vocab` when given."""
        table = load_significance(directory)
        if vocab is not None:
            table.check_vocab(vocab)
        return cls.from_table(table, top_k)

    def replacements(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        """long `shape`: each entry a random lemma variant of a uniformly drawn significant word."""
        device = generator.device
        word = torch.randint(0, len(self.significant_ids), shape, generator=generator, device=device)
        counts = self.variant_counts.to(device)[word]
        pick = (torch.rand(shape, generator=generator, device=device) * counts).long().clamp(max=counts - 1)
        return self.variant_ids.to(device)[word, pick]


def caption_positions(ids: torch.Tensor, attention_mask: torch.Tensor, special: SpecialIds) -> torch.Tensor:
    """bool [N, L]: real caption wordpieces (no [CLS]/[SEP]/[PAD]/[UNK]/[MASK], no padding)."""
    never = torch.tensor(special.never_mask, device=ids.device)
    return attention_mask.bool() & ~torch.isin(ids, never)


def mssm_count(n: torch.Tensor, probability: float = 0.15) -> torch.Tensor:
    """Tokens to mask for captions of n tokens: floor(p n) + [frac(p n) >= 0.3] (n=3 -> 1, 10 -> 2, 20 -> 3)."""
    scaled = n.double() * probability
    whole = scaled.floor()
    return (whole + (scaled - whole >= ROUND_UP_FRACTION).double()).long()


def mssm_mask(ids: torch.Tensor, attention_mask: torch.Tensor, special: SpecialIds, vocab: MssmVocab,
              cfg: MaskingConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MSSM on [N, L] ids: returns (masked ids, labels), labels = original id where chosen, -100 elsewhere."""
    content = caption_positions(ids, attention_mask, special)
    significant = content & vocab.significant.to(ids.device)[ids]
    count = mssm_count(content.sum(1), cfg.probability)
    chosen = _first_k(_ranked_keys(content, significant, generator), count)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    action = _rand(ids, generator)
    to_mask = chosen & (action < cfg.mask_ratio)
    to_replace = chosen & (action >= cfg.mask_ratio) & (action < cfg.mask_ratio + cfg.random_ratio)
    masked = torch.where(to_mask, torch.full_like(ids, special.mask), ids)
    masked = torch.where(to_replace, vocab.replacements(ids.shape, generator).to(ids.device), masked)
    return masked, labels


def choose_words(ids: torch.Tensor, attention_mask: torch.Tensor, special: SpecialIds, significant: torch.Tensor,
                 num_words: int, generator: torch.Generator) -> torch.Tensor:
    """LVWM word positions, long [N, num_words]: up to num_words significant tokens sampled without
    replacement; a caption with none uses its other caption tokens; one with no tokens at all uses [CLS]
    (position 0). Fewer than num_words candidates are cycled to fill the row."""
    content = caption_positions(ids, attention_mask, special)
    sig = content & significant.to(ids.device)[ids]
    pool = torch.where(sig.any(1, keepdim=True), sig, content)
    pool[:, 0] |= ~pool.any(1)
    order = _rand(ids, generator).masked_fill(~pool, float("inf")).argsort(dim=1)
    available = pool.sum(1, keepdim=True).clamp(max=num_words)
    slots = torch.arange(num_words, device=ids.device).expand(ids.shape[0], -1) % available
    return order.gather(1, slots)


def attentive_mask(ids: torch.Tensor, attention_mask: torch.Tensor, importance: torch.Tensor, special: SpecialIds,
                   generator: torch.Generator, probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Attentive masking (REFERENCE §2.4): per caption, max(int(p n), 1) of its n tokens, drawn without
    replacement with probability proportional to `importance` [N, L] (the attention each token receives in
    the text pass), all replaced by [MASK]. Specials and padding are never drawn (the reference leaves
    padding a 1e-6 chance). Runs on ids' device; the generator may live on the CPU.

    Returns (masked ids, labels) like mlm_mask.
    """
    content = caption_positions(ids, attention_mask, special)
    n = content.sum(1)
    count = torch.where(n > 0, (n.double() * probability).long().clamp(min=1), torch.zeros_like(n))
    weight = importance.detach().float().clamp(min=0) + 1e-6
    keys = -torch.log(_rand(ids, generator).clamp(min=1e-12)) / weight  # smallest Exp(1)/w = weighted draw
    chosen = _first_k(keys.masked_fill(~content, float("inf")), count) & content
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return torch.where(chosen, torch.full_like(ids, special.mask), ids), labels


def _ranked_keys(content: torch.Tensor, preferred: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random sort keys: preferred positions in [0, 1), other content in [1, 2), the rest +inf."""
    keys = _rand(content, generator) + (~preferred).float()
    return keys.masked_fill(~content, float("inf"))


def _rand(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """U(0, 1) shaped like `like`, drawn on the generator's device and moved to `like`'s."""
    return torch.rand(like.shape, generator=generator, device=generator.device).to(like.device)


def _first_k(keys: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """bool [N, L]: True at the count[n] smallest keys of each row."""
    rank = keys.argsort(dim=1).argsort(dim=1)
    return rank < count.unsqueeze(1)
