"""MSSM masking, LVWM word choice and attentive masking; the Collator wiring and its seeding.

The table here is written without spaCy (hand-made counts through the miner's own column and file
writers), so these tests are fast and pin exactly which tokens are significant.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from snps3_ds.mining.mine import vocab_columns, write_table
from snps3_ds.config import ConfigError, MaskingConfig, load_config
from snps3_ds.data.collate import Collator
from snps3_ds.data.decode.sample import DecodedSample
from snps3_ds.data.seeds import WorkerRandom
from snps3_ds.data.text.mssm import MssmVocab, attentive_mask, caption_positions, choose_words, mssm_count, mssm_mask
from snps3_ds.data.text.significance import SignificanceError, load_significance
from snps3_ds.data.text.tokens import IGNORE_INDEX, SpecialIds, tokenize

CONTENT = ("dog", "man", "woman", "women", "running", "runs", "red", "ball", "grass", "jumping", "shirt", "water",
           "beach", "boy", "girl", "playing", "blue", "small", "field", "snow")
NOT_SIGNIFICANT = ("zebra", "kayak", "violin", "lantern")  # content words the table never saw
FUNCTION = ("a", "the", "on", "in", "with", "and", "of", "is", "his", "while")
VARIANTS = {"running": ["ran", "run", "running", "runs"], "runs": ["ran", "run", "running", "runs"],
            "woman": ["woman", "women"], "women": ["woman", "women"]}


@pytest.fixture(scope="module")
def table_dir(tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~3,000 significant words: CONTENT plus filler whole words; NOT_SIGNIFICANT and FUNCTION get no count."""
    names = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    skip = set(NOT_SIGNIFICANT) | set(FUNCTION)
    filler = [n for n in names if n.isalpha() and len(n) > 2 and n not in skip][:3000 - len(CONTENT)]
    counts = Counter({("NOUN", word): 10_000 - i for i, word in enumerate(CONTENT)})
    counts.update({("VERB", word): 1 + i % 500 for i, word in enumerate(filler)})
    columns, _ = vocab_columns(counts, names, str.lower, abandon=("is",))
    index = {n: i for i, n in enumerate(names)}
    variants = {index[word]: words for word, words in VARIANTS.items()}
    out = tmp_path_factory.mktemp("significance")
    write_table(out, columns, variants, {"tokenizer": "packaged", "captions": 0})
    return out


@pytest.fixture(scope="module")
def vocab(table_dir: Path) -> MssmVocab:
    return MssmVocab.load(table_dir, top_k=3000)


def _captions(count: int, seed: int = 0) -> list[str]:
    """Random word salads of 1-26 words: some rich in significant words, some with none at all."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        p_sig = rng.choice([0.0, 0.1, 0.3, 0.6])
        words = [rng.choice(CONTENT) if rng.random() < p_sig else rng.choice(FUNCTION + NOT_SIGNIFICANT)
                 for _ in range(rng.randint(1, 26))]
        out.append(" ".join(words))
    return out


def test_mssm_count_formula_matches_the_reference() -> None:
    n = torch.arange(0, 101)
    expected = [int(k * 0.15) + int(k * 0.15 - int(k * 0.15) >= 0.3) for k in range(101)]
    assert mssm_count(n).tolist() == expected
    assert mssm_count(torch.tensor([1, 3, 7, 10, 20])).tolist() == [0, 1, 1, 2, 3]


def test_mssm_masking_over_10000_captions(tokenizer, vocab: MssmVocab) -> None:
    ids, mask = tokenize(tokenizer, _captions(10_000), max_len=32)
    special = SpecialIds.from_tokenizer(tokenizer)
    masked, labels = mssm_mask(ids, mask, special, vocab, MaskingConfig(kind="mssm", significance_dir="x"),
                               torch.Generator().manual_seed(0))
    content = caption_positions(ids, mask, special)
    significant = content & vocab.significant[ids]
    chosen = labels != IGNORE_INDEX
    m = mssm_count(content.sum(1))
    assert torch.equal(chosen.sum(1), m), "masked count per caption must follow floor(.15n)+[frac>=.3]"
    enough = significant.sum(1) >= m
    assert int(enough.sum()) > 3000 and int((~enough).sum()) > 1000, "the corpus must exercise both branches"
    assert not (chosen & ~significant)[enough].any(), "with enough significant tokens only those are masked"
    assert torch.equal((chosen & significant)[~enough], significant[~enough]), "short: every significant is masked"
    assert not (chosen & ~content).any() and torch.equal(masked[~content], ids[~content])
    assert torch.equal(labels[chosen], ids[chosen]) and (labels[~chosen] == IGNORE_INDEX).all()
    assert torch.equal(masked[~chosen], ids[~chosen])
    total = int(chosen.sum())
    to_mask = chosen & (masked == special.mask)
    replaced = chosen & (masked != special.mask) & (masked != ids)
    kept = chosen & (masked == ids)
    for part, share in ((to_mask, 0.8), (replaced, 0.1), (kept, 0.1)):
        assert abs(int(part.sum()) / total - share) < 0.02
    allowed = set(vocab.variant_ids.flatten().tolist())
    assert set(masked[replaced].tolist()) <= allowed, "replacements are lemma variants of significant words"


def test_mssm_replacement_draws_lemma_variants_or_the_word_itself(tokenizer, vocab: MssmVocab) -> None:
    to_id = tokenizer.convert_tokens_to_ids
    row = (vocab.significant_ids == to_id("running")).nonzero().item()
    assert sorted(vocab.variant_ids[row, : vocab.variant_counts[row]].tolist()) == sorted(
        to_id(["ran", "run", "running", "runs"]))
    dog = (vocab.significant_ids == to_id("dog")).nonzero().item()
    assert vocab.variant_counts[dog] == 1 and vocab.variant_ids[dog, 0] == to_id("dog")
    draws = vocab.replacements(torch.Size([200_000]), torch.Generator().manual_seed(1))
    names = set(tokenizer.convert_ids_to_tokens(draws.unique().tolist()))
    assert {"ran", "women", "dog"} <= names, "variants and variant-less words are both drawn"
    assert all(len(name) > 1 for name in names), "never a single character (the reference's fallback bug)"


def test_mssm_masking_is_reproducible_from_the_generator(tokenizer, vocab: MssmVocab) -> None:
    ids, mask = tokenize(tokenizer, _captions(64, seed=3), max_len=32)
    special, cfg = SpecialIds.from_tokenizer(tokenizer), MaskingConfig(kind="mssm", significance_dir="x")
    run = lambda seed: mssm_mask(ids, mask, special, vocab, cfg, torch.Generator().manual_seed(seed))  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(run(5), run(5)))
    assert not torch.equal(run(5)[1], run(6)[1])


def test_mssm_word_choice_prefers_significant_and_pads_by_repetition(tokenizer, vocab: MssmVocab) -> None:
    captions = ["a dog and a man on the grass with a ball", "the woman with a zebra", "a zebra on the kayak", ""]
    ids, mask = tokenize(tokenizer, captions, max_len=16)
    special = SpecialIds.from_tokenizer(tokenizer)
    pos = choose_words(ids, mask, special, vocab.significant, 3, torch.Generator().manual_seed(0))
    assert pos.shape == (4, 3) and pos.dtype == torch.long
    words = [tokenizer.convert_ids_to_tokens(ids[i, pos[i]].tolist()) for i in range(4)]
    assert len(set(pos[0].tolist())) == 3 and set(words[0]) <= {"dog", "man", "grass", "ball"}
    assert words[1] == ["woman"] * 3, "one significant word, repeated"
    assert len(set(pos[2].tolist())) == 3 and set(words[2]) <= {"a", "zebra", "on", "the", "kayak"}
    assert pos[3].tolist() == [0, 0, 0], "an empty caption falls back to [CLS]"
    many = choose_words(ids[:1].expand(2000, -1), mask[:1].expand(2000, -1), special, vocab.significant, 3,
                        torch.Generator().manual_seed(1))
    assert len({tuple(sorted(r)) for r in many.tolist()}) == 4, "every 3-of-4 subset is drawn"


def test_mssm_attentive_mask_follows_importance(tokenizer) -> None:
    caption = "a dog runs on the grass with a red ball near the water and a tree"
    ids, mask = tokenize(tokenizer, [caption] * 4000, max_len=20)
    special = SpecialIds.from_tokenizer(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    dog, grass, sep = tokens.index("dog"), tokens.index("grass"), tokens.index("[SEP]")
    importance = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0))
    importance[:, dog] = 1000.0  # receives almost all attention
    importance[:, grass] = 0.0  # receives none
    importance[:, 0] = importance[:, sep] = 1e6  # [CLS]/[SEP] weights must be ignored
    masked, labels = attentive_mask(ids, mask, importance, special, torch.Generator().manual_seed(1))
    chosen = labels != IGNORE_INDEX
    content = caption_positions(ids, mask, special)
    assert (chosen.sum(1) == int((sep - 1) * 0.15)).all() and int((sep - 1) * 0.15) == 2
    assert not (chosen & ~content).any()
    assert (masked[chosen] == special.mask).all() and torch.equal(labels[chosen], ids[chosen])
    assert chosen[:, dog].float().mean() > 0.99 and chosen[:, grass].float().mean() < 0.01
    short, _ = tokenize(tokenizer, ["dog"], max_len=8)
    _, labels = attentive_mask(short, (short != 0).long(), torch.ones(short.shape), special, torch.Generator())
    assert (labels != IGNORE_INDEX).sum() == 1, "at least one token per caption"


def _samples(count: int) -> list[DecodedSample]:
    return [DecodedSample(f"k{i}", torch.zeros(1, 3, 4, 4), [c]) for i, c in enumerate(_captions(count, seed=9))]


def _collate(table_dir: Path, tokenizer, seed: int, rank: int, masking: MaskingConfig | None = None):
    masking = masking or MaskingConfig(kind="mssm", significance_dir=str(table_dir))
    return Collator(tokenizer, 24, 1, masking, True, WorkerRandom(seed, rank, 2))(_samples(32))


def test_mssm_collator_masks_and_chooses_words(table_dir: Path, tokenizer, vocab: MssmVocab) -> None:
    batch = _collate(table_dir, tokenizer, seed=0, rank=0)
    assert batch.word_positions is not None and batch.word_positions.shape == (32, 3)
    chosen = batch.mlm_labels != IGNORE_INDEX
    content = caption_positions(batch.text_ids, batch.text_mask, SpecialIds.from_tokenizer(tokenizer))
    assert torch.equal(chosen.sum(1), mssm_count(content.sum(1)))
    assert torch.equal(batch.mlm_labels[chosen], batch.text_ids[chosen])
    mlm = _collate(table_dir, tokenizer, 0, 0, MaskingConfig(kind="mlm", significance_dir=str(table_dir)))
    assert mlm.word_positions is not None, "LVWM words are chosen whenever a table is configured"
    evaluation = Collator(tokenizer, 24, 1, None, False, WorkerRandom(0, 0, 2))(_samples(4))
    assert evaluation.word_positions is None and (evaluation.mlm_labels == IGNORE_INDEX).all()


def test_mssm_same_seed_same_masks_other_rank_other_masks(table_dir: Path, tokenizer) -> None:
    first, again = _collate(table_dir, tokenizer, 0, 0), _collate(table_dir, tokenizer, 0, 0)
    other_rank, other_seed = _collate(table_dir, tokenizer, 0, 1), _collate(table_dir, tokenizer, 1, 0)
    for field in ("mlm_ids", "mlm_labels", "word_positions"):
        assert torch.equal(getattr(first, field), getattr(again, field))
    assert not torch.equal(first.mlm_labels, other_rank.mlm_labels)
    assert not torch.equal(first.mlm_labels, other_seed.mlm_labels)


class _SameSamplesEveryWorker(IterableDataset):
    def __init__(self, collate: Collator) -> None:
        self.collate = collate

    def __iter__(self):
        yield self.collate(_samples(32))


def test_mssm_dataloader_workers_draw_different_masks(table_dir: Path, tokenizer) -> None:
    def worker_labels() -> list[torch.Tensor]:
        masking = MaskingConfig(kind="mssm", significance_dir=str(table_dir))
        collate = Collator(tokenizer, 24, 1, masking, True, WorkerRandom(0, 0, 2))
        loader = DataLoader(_SameSamplesEveryWorker(collate), batch_size=None, num_workers=2)
        return [batch.mlm_labels for batch in loader]

    first, again = worker_labels(), worker_labels()  # one batch from each of the 2 workers, in worker order
    assert len(first) == 2 and not torch.equal(first[0], first[1]), "workers must not share masks"
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "the same seed must give the same masks"


def test_mssm_config_and_table_errors_name_the_problem(table_dir: Path, tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="significance_dir"):
        load_config(None, ["masking.kind=mssm"])
    cfg = load_config(None, ["masking.kind=mssm", f"masking.significance_dir={table_dir}", "masking.top_k=100"])
    assert cfg.masking.kind == "mssm" and cfg.masking.top_k == 100 and cfg.masking.word_chosen_num == 3
    with pytest.raises(SignificanceError, match="significance.json"):
        Collator(tokenizer, 24, 1, MaskingConfig(kind="mssm", significance_dir=str(tmp_path)), True,
                 WorkerRandom(0, 0, 2))
    with pytest.raises(SignificanceError, match="another vocabulary"):
        load_significance(table_dir).check_vocab(["[PAD]", "hello"])
