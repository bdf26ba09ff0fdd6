"""The mined significant-word table and lemma lists (DESIGN §3.4), read once per process.

`data_prep/mine_significant_words.py` writes them; MSSM masking and LVWM word choice read them. A token is
*significant* for a given K when its rank (0-based, ties shared) is at most K and it occurred at all: the
reference's `rank <= words_top_k` (REFERENCE §2.5), which keeps 3,002 ids at K = 3,000 on its WebVid table.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

SIGNIFICANCE_FILE = "significance.json"
LEMMAS_FILE = "lemmas.json"
SUMMARY_FILE = "summary.txt"


class SignificanceError(ValueError):
    """A missing or malformed table; names the file and what was expected."""


@dataclass(frozen=True)
class SignificanceTable:
    """Per-token-id rank and count of one mined table, plus the lemma variants of each vocab word."""

    directory: Path
    names: tuple[str, ...]
    rank: torch.Tensor  # long [V]
    total: torch.Tensor  # long [V]
    variants: dict[int, tuple[int, ...]]  # token id -> ids sharing its lemma (itself included); absent if none

    @property
    def vocab_size(self) -> int:
        return len(self.names)

    def significant_mask(self, top_k: int) -> torch.Tensor:
        """bool [V]: True for the ids ranked 0..top_k (the reference's `<=`; ties at the boundary included)."""
        return (self.rank <= top_k) & (self.total > 0)

    def significant_ids(self, top_k: int) -> torch.Tensor:
        """long [S]: the significant ids, ascending."""
        return self.significant_mask(top_k).nonzero().flatten()

    def lemma_variants(self, token_id: int) -> tuple[int, ...]:
        """Ids sharing the token's lemma (itself included), or () when it has none."""
        return self.variants.get(int(token_id), ())

    def check_vocab(self, vocab: list[str]) -> None:
        """Fail unless the table was mined with this vocabulary (ids would otherwise mean other words)."""
        if list(vocab) != list(self.names):
            pairs = enumerate(zip(vocab, self.names))
            diff = next((i for i, (a, b) in pairs if a != b), min(len(vocab), self.vocab_size))
            raise SignificanceError(
                f"{self.directory / SIGNIFICANCE_FILE} was mined with another vocabulary ({self.vocab_size} tokens; "
                f"the tokenizer has {len(vocab)}, first difference at id {diff}); re-run "
                f"data_prep/mine_significant_words.py --tokenizer <the run's tokenizer>")


def load_significance(directory: str | Path) -> SignificanceTable:
    """The table in `directory`, parsed once per process and file version (cached by path and mtime)."""
    directory = Path(directory).expanduser().resolve()
    paths = [directory / SIGNIFICANCE_FILE, directory / LEMMAS_FILE]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SignificanceError(f"significance table incomplete: missing {', '.join(missing)}; make it with "
                                f"`python data_prep/mine_significant_words.py --input <shards> --out {directory}`")
    return _load(directory, tuple(p.stat().st_mtime_ns for p in paths))


@functools.lru_cache(maxsize=4)
def _load(directory: Path, _mtimes: tuple[int, ...]) -> SignificanceTable:
    tokens = _read_json(directory / SIGNIFICANCE_FILE, "tokens")["tokens"]
    for column in ("name", "rank", "total_count"):
        if not isinstance(tokens.get(column), list):
            raise SignificanceError(f"{directory / SIGNIFICANCE_FILE}: expected a list 'tokens.{column}' indexed by id")
    names = tuple(tokens["name"])
    index = {name: i for i, name in enumerate(names)}
    raw = _read_json(directory / LEMMAS_FILE, "variants")["variants"]
    try:
        variants = {int(key): tuple(index[word] for word in words) for key, words in raw.items()}
    except (KeyError, ValueError) as err:
        raise SignificanceError(f"{directory / LEMMAS_FILE}: 'variants' must map token ids to words of the table's "
                                f"vocabulary ({err!r} is not)") from err
    return SignificanceTable(directory, names, torch.tensor(tokens["rank"], dtype=torch.long),
                             torch.tensor(tokens["total_count"], dtype=torch.long), variants)


def _read_json(path: Path, key: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SignificanceError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise SignificanceError(f"{path}: expected a JSON object with a {key!r} mapping")
    return data
