"""Significant-word mining: caption readers, ranking rules, lemma lists, and real runs (tiny corpus, Flickr8k)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from snps3_ds.mining.captions import CaptionSourceError, iter_captions
from snps3_ds.mining.mine import (competition_rank, ensure_table, lemma_variants, main, mine,
                                              pos_shares, vocab_columns)
from snps3_ds.data.text.significance import load_significance
from snps3_ds.data.text.tokens import load_tokenizer

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
FLICKR = REALDATA / "captions" / "Flickr8k.token.txt"
CLOSED_CLASS = {  # determiners, prepositions, pronouns, conjunctions, auxiliaries
    "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "no", "another", "both",
    "all", "either", "neither", "in", "on", "at", "of", "with", "by", "for", "from", "to", "into", "onto", "over",
    "under", "through", "across", "near", "behind", "down", "up", "out", "off", "around", "along", "against",
    "between", "beside", "above", "below", "inside", "outside", "he", "she", "it", "they", "we", "you", "his",
    "her", "its", "their", "them", "him", "who", "which", "someone", "something", "and", "or", "but", "while",
    "as", "be", "is", "are", "was", "were", "been", "being", "am", "has", "have", "had", "do", "does", "did", "can",
    "will", "could", "would", "should", "may", "might", "must"}
FLICKR_LINES = ("1000268201_693b08cb0e.jpg#0 A child in a pink dress is climbing up a set of stairs .\n"
                "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
                "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\n"
                "1001773457_577c3a7d70.jpg#1\tTwo women were running while the dogs ran\n")


@pytest.fixture(scope="module")
def names() -> list[str]:
    tokenizer = load_tokenizer()
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


@pytest.fixture(scope="module")
def tiny_table(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny generated corpus mined once (the vocabulary's lemma lists are the slow part, ~10 s)."""
    return mine([tiny_corpus / "train"], tmp_path_factory.mktemp("tiny_sig"), workers=2, progress=False)


def test_mining_reads_every_caption_format(tiny_corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "f.token.txt").write_text(FLICKR_LINES)
    (tmp_path / "a.jsonl").write_text('{"caption": "one"}\n\n{"captions": ["two", " ", "three"]}\n')
    (tmp_path / "b.csv").write_text('video_id;captions\nv1;"[""four"", ""five""]"\nv2;six\n')
    (tmp_path / "c.tsv").write_text("id\tcaption\n1\tseven\n")
    assert list(iter_captions([str(tmp_path / "f.token.txt")]))[:2] == [
        "A child in a pink dress is climbing up a set of stairs .", "A girl going into a wooden building ."]
    assert list(iter_captions([str(tmp_path / "*.jsonl"), str(tmp_path / "b.csv"), str(tmp_path / "c.tsv")])) == [
        "one", "two", "three", "four", "five", "six", "seven"]
    index = json.loads((tiny_corpus / "train.shards.json").read_text())
    from_prefix = list(iter_captions([str(tiny_corpus / "train")]))
    assert len(from_prefix) >= index["num_samples"] and all(isinstance(c, str) and c for c in from_prefix)
    assert list(iter_captions([str(tiny_corpus / "train-*.tar")])) == from_prefix
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(CaptionSourceError, match=r"bad.jsonl:1: .*'caption'"):
        list(iter_captions([str(tmp_path / "bad.jsonl")]))
    with pytest.raises(CaptionSourceError, match="nowhere"):
        list(iter_captions([str(tmp_path / "nowhere")]))


def test_mining_ranks_share_ties_and_put_zero_counts_last() -> None:
    total = np.array([0, 5, 9, 5, 0, 1])
    assert competition_rank(total).tolist() == [4, 1, 0, 1, 4, 3]


def test_mining_pos_share_rule_zeroes_minor_shares_and_renormalises() -> None:
    counts = {"VERB": np.array([20, 0, 50]), "NOUN": np.array([70, 0, 30]), "ADJ": np.array([10, 0, 20])}
    shares = pos_shares(counts, counts["VERB"] + counts["NOUN"] + counts["ADJ"])
    assert np.allclose(shares["VERB"], [0.0, 0.0, 0.5 / 0.8]) and np.allclose(shares["NOUN"], [1.0, 0.0, 0.3 / 0.8])
    assert np.allclose(shares["ADJ"], [0.0, 0.0, 0.0]), "20% and 10% fall under the 25% rule"


def test_mining_maps_words_onto_the_vocab(names: list[str]) -> None:
    counts = Counter({("NOUN", "Dog"): 3, ("NOUN", "dog"): 2, ("VERB", "is"): 9, ("NOUN", "x"): 9,
                      ("ADJ", "zzqqxx"): 4, ("NUM", "two"): 7, ("VERB", "running"): 1})
    columns, coverage = vocab_columns(counts, names, str.lower, abandon=("is",))
    dog, two, running = names.index("dog"), names.index("two"), names.index("running")
    assert columns["noun_count"][dog] == 5, "capitalised words count for an uncased vocab"
    assert columns["total_count"][two] == 0 and columns["num_count"][two] == 7, "NUM is counted, not ranked"
    assert columns["rank"][dog] == 0 and columns["rank"][running] == 1
    assert columns["total_count"][names.index("is")] == 0 and columns["total_count"][names.index("x")] == 0
    assert coverage["dropped"] == 18 and coverage["not_in_vocab"] == 4


def test_mining_lemma_lists_group_inflections(names: list[str]) -> None:
    variants = lemma_variants(names, workers=2)
    of = lambda word: variants.get(names.index(word))  # noqa: E731
    assert of("running") == of("run") == of("ran") == of("runs") and {"run", "ran", "runs", "running"} <= set(
        of("running"))
    assert of("women") == of("woman") and {"woman", "women"} <= set(of("women"))
    assert {"dog", "dogs"} <= set(of("dogs")) and {"man", "men"} <= set(of("men"))
    assert of("grass") is None or "gras" not in of("grass")
    assert all(len(w) > 1 and not w.startswith("##") for ws in variants.values() for w in ws)


def test_mining_tiny_corpus_end_to_end(tiny_table: Path) -> None:
    table = load_significance(tiny_table)
    names = list(table.names)
    significant = {names[i] for i in table.significant_ids(3000).tolist()}
    assert {"circle", "square", "small", "large"} <= significant
    assert not significant & {"the", "a", "on", "to", "of", "[CLS]"}
    assert set(table.lemma_variants(names.index("running"))) >= {names.index("run"), names.index("ran")}
    summary = (tiny_table / "summary.txt").read_text()
    assert "captions: 48" in summary and "vocabulary coverage" in summary and "top NOUN:" in summary


def test_mining_cli_on_a_tab_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f.token.txt").write_text(FLICKR_LINES)
    out = tmp_path / "sig"
    main(["--input", str(tmp_path / "f.token.txt"), "--out", str(out), "--workers", "1", "--abandon", "be,are"])
    table = load_significance(out)
    ranked = sorted((int(r), n) for r, n, t in zip(table.rank, table.names, table.total) if t > 0)
    assert ranked[0] == (0, "dog"), "Dog (3x, capitalised once) ranks first"
    assert {n for _, n in ranked} >= {"child", "pink", "climbing", "women", "running", "ran", "black"}
    assert "captions: 4" in capsys.readouterr().out
    stamp = (out / "significance.json").stat().st_mtime_ns
    ensure_table([str(tmp_path / "f.token.txt")], out)
    assert (out / "significance.json").stat().st_mtime_ns == stamp, "--if-missing must not mine again"


@pytest.mark.slow
def test_mining_flickr8k_real_captions(tmp_path: Path) -> None:
    """40k real captions: ~30 s on 2 idle cores, 60-80 s when other jobs share them."""
    if not FLICKR.is_file():
        pytest.skip(f"real captions not present at {FLICKR} (shared/realdata is optional)")
    start = time.perf_counter()
    mine([str(FLICKR)], tmp_path, workers=2, progress=False)
    seconds = time.perf_counter() - start
    table = load_significance(tmp_path)
    order = sorted(range(table.vocab_size), key=lambda i: (int(table.rank[i]), i))
    top = [table.names[i] for i in order[:100]]
    print(f"mined 40k Flickr8k captions in {seconds:.1f} s")  # a figure, not a timed assertion
    assert not set(top) & CLOSED_CLASS, f"function words in the top 100: {set(top) & CLOSED_CLASS}"
    assert {"man", "woman", "dog"} <= set(top[:50]), top[:50]
    meta = json.loads((tmp_path / "significance.json").read_text())
    assert meta["captions"] == 40460
