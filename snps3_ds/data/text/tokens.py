"""Text side of the data path: local tokenizer loading, caption tokenisation and MLM masking.

Masking takes an explicit torch.Generator so a test can pin its output and a resumed run can replay it.
"""

from __future__ import annotations

import random
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from transformers import BertTokenizerFast, PreTrainedTokenizerBase

from snps3_ds.config import MaskingConfig
from snps3_ds.local_files import resolve_text_dir

IGNORE_INDEX = -100


def load_tokenizer(name: str = "packaged") -> PreTrainedTokenizerBase:
    """A BERT WordPiece tokenizer from a local directory."""
    return BertTokenizerFast.from_pretrained(str(resolve_text_dir(name)), local_files_only=True)


def tokenize(tokenizer: PreTrainedTokenizerBase, captions: list[str], max_len: int,
             window: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`[CLS] caption [SEP] [PAD]...` ids and attention mask, [N, max_len].

    A caption longer than max_len - 2 wordpieces keeps its head, or with `window` a random run of them
    (the reference's pre-training `random_truncate`, DESIGN §3.3), so a long caption's tail is seen too.
    One window per caption, taken before masking, so the text pass, the masks and the labels agree (the
    reference draws two independent windows, REFERENCE §8.12).
    """
    if window is not None:
        return _windowed(tokenizer, captions, max_len, window)
    backend = _padded_backend(tokenizer, max_len)
    if backend is None:
        enc = tokenizer(captions, max_length=max_len, truncation=True, padding="max_length", return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]
    encodings = backend.encode_batch(captions)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    return ids, torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)


def _windowed(tokenizer: PreTrainedTokenizerBase, captions: list[str], max_len: int,
              window: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    body = max_len - 2
    ids = torch.full((len(captions), max_len), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, pieces in enumerate(tokenizer(captions, add_special_tokens=False)["input_ids"]):
        if len(pieces) > body:
            start = window.randrange(len(pieces) - body + 1)
            pieces = pieces[start:start + body]
        full = [tokenizer.cls_token_id, *pieces, tokenizer.sep_token_id]
        ids[row, :len(full)] = torch.tensor(full)
        mask[row, :len(full)] = 1
    return ids, mask


_BACKENDS: "weakref.WeakKeyDictionary[PreTrainedTokenizerBase, dict[int, Any]]" = weakref.WeakKeyDictionary()


def _padded_backend(tokenizer: PreTrainedTokenizerBase, max_len: int) -> Any:
    """A copy of the tokenizer's Rust backend that truncates and pads to max_len on the right (None: not a fast
    tokenizer, or one set to pad or truncate on the left). Called directly: the same ids as
    `tokenizer(..., padding="max_length", truncation=True)` in 0.6x the time, which loader workers pay per batch."""
    if not getattr(tokenizer, "is_fast", False) or tokenizer.padding_side != "right" \
            or tokenizer.truncation_side != "right":
        return None
    by_length = _BACKENDS.setdefault(tokenizer, {})
    if max_len not in by_length:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.enable_truncation(max_len)
        backend.enable_padding(length=max_len, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token,
                               pad_type_id=tokenizer.pad_token_type_id)
        by_length[max_len] = backend
    return by_length[max_len]


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the masking needs; read once from the tokenizer."""

    mask: int
    vocab_size: int
    never_mask: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> "SpecialIds":
        return cls(mask=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                   never_mask=tuple(sorted(set(tokenizer.all_special_ids))))


def mlm_mask(ids: torch.Tensor, attention_mask: torch.Tensor, special: SpecialIds, cfg: MaskingConfig,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: each caption token is chosen with cfg.probability; chosen tokens become [MASK]
    (mask_ratio), a random token (random_ratio) or stay as they are. Specials and padding are never chosen.

    Returns (masked ids, labels) with labels = original id where chosen, IGNORE_INDEX elsewhere.
    """
    maskable = attention_mask.bool() & ~torch.isin(ids, torch.tensor(special.never_mask))
    chosen = (torch.rand(ids.shape, generator=generator) < cfg.probability) & maskable
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    action = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (action < cfg.mask_ratio)
    to_random = chosen & (action >= cfg.mask_ratio) & (action < cfg.mask_ratio + cfg.random_ratio)
    random_ids = _random_ordinary_ids(ids.shape, special, generator)
    masked = torch.where(to_mask, torch.full_like(ids, special.mask), ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def _random_ordinary_ids(shape: torch.Size, special: SpecialIds, generator: torch.Generator) -> torch.Tensor:
    """Uniform vocabulary ids, redrawn where they hit a special token (a random [CLS] would be a leak)."""
    ids = torch.randint(0, special.vocab_size, shape, generator=generator)
    bad = torch.isin(ids, torch.tensor(special.never_mask))
    while bad.any():
        ids[bad] = torch.randint(0, special.vocab_size, (int(bad.sum()),), generator=generator)
        bad = torch.isin(ids, torch.tensor(special.never_mask))
    return ids
