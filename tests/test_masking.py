"""MLM masking rules: 15% of caption tokens, 80/10/10, specials and padding never touched, reproducible."""

from __future__ import annotations

import torch

from snps3_ds.config import MaskingConfig
from snps3_ds.data.text.tokens import IGNORE_INDEX, SpecialIds, load_tokenizer, mlm_mask, tokenize

CAPTIONS = ["a small red circle moves to the left on a grey background",
            "on a black background a large blue square slides upward",
            "a green triangle", "two shapes: a purple diamond moves right while a white circle stays still"]


def _encoded(repeat: int = 500) -> tuple[torch.Tensor, torch.Tensor, SpecialIds]:
    tokenizer = load_tokenizer()
    ids, mask = tokenize(tokenizer, CAPTIONS * repeat, max_len=24)
    return ids, mask, SpecialIds.from_tokenizer(tokenizer)


def test_mlm_masking_rate_split_and_labels() -> None:
    ids, mask, special = _encoded()
    masked, labels = mlm_mask(ids, mask, special, MaskingConfig(), torch.Generator().manual_seed(0))
    specials = torch.isin(ids, torch.tensor(special.never_mask)) | (mask == 0)
    chosen = labels != IGNORE_INDEX
    caption_tokens = int((~specials).sum())
    assert abs(int(chosen.sum()) / caption_tokens - 0.15) < 0.01
    assert not (chosen & specials).any(), "a special token or padding was chosen"
    assert torch.equal(masked[specials], ids[specials]), "a special token or padding was changed"
    assert torch.equal(labels[chosen], ids[chosen]), "labels must be the original tokens"
    n = int(chosen.sum())
    to_mask = (masked == special.mask) & chosen
    unchanged = (masked == ids) & chosen
    replaced = chosen & ~to_mask & ~unchanged
    assert abs(int(to_mask.sum()) / n - 0.8) < 0.02
    assert abs(int(replaced.sum()) / n - 0.1) < 0.02
    assert abs(int(unchanged.sum()) / n - 0.1) < 0.025  # a random token can equal the original
    assert not torch.isin(masked[replaced], torch.tensor(special.never_mask)).any()
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_mlm_masking_is_reproducible_from_the_generator() -> None:
    ids, mask, special = _encoded(repeat=20)
    first = mlm_mask(ids, mask, special, MaskingConfig(), torch.Generator().manual_seed(7))
    again = mlm_mask(ids, mask, special, MaskingConfig(), torch.Generator().manual_seed(7))
    other = mlm_mask(ids, mask, special, MaskingConfig(), torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])


def test_tokenize_adds_cls_sep_and_pads() -> None:
    tokenizer = load_tokenizer()
    ids, mask = tokenize(tokenizer, ["a red circle"], max_len=8)
    assert ids.shape == (1, 8)
    assert ids[0, 0] == tokenizer.cls_token_id and tokenizer.sep_token_id in ids[0].tolist()
    assert mask[0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
