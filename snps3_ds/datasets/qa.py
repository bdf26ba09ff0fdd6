"""The open-ended QA json of Xu et al. 2017 ({train,val,test}_qa.json: a list of {answer, id, question, video_id}),
shared by MSRVTT-QA and MSVD-QA; each dataset module passes its own video key function."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from snps3_ds.datasets.base import BadRows, ManifestError, json_list, row_problem, text_field
from snps3_ds.downstream.annotations import Annotation, top_answers


def coverage(ann: Annotation) -> tuple[int, int]:
    """(questions whose answer is in the vocabulary, questions)."""
    return sum(ann.label_of(item["answer"]) >= 0 for item in ann.items), len(ann.items)


def read_qa(path: Path, key_of: Callable[[Any], str], split: str, answers: list[str] | None,
            top_n: int, skip_bad: bool) -> Annotation:
    """A qa annotation of `path`; video ids become shard keys through `key_of`. Without `answers` the vocabulary
    is this file's top-`top_n` answers (use that only for the training file)."""
    data = json_list(path, "a QA JSON list of {answer, id, question, video_id}")
    bad, items = BadRows(path, skip_bad), []
    for i, entry in enumerate(data):
        try:
            item = {"video": key_of(entry["video_id"]), "question": text_field(entry, "question"),
                    "answer": text_field(entry, "answer")}
        except (KeyError, TypeError, ValueError) as err:
            bad.add(f"item {i}", f"{row_problem(err)} (expected {{answer, id, question, video_id}})")
            continue
        if "id" in entry:
            item["id"] = entry["id"]
        items.append(item)
    bad.finish()
    if not items:
        raise ManifestError(f"{path}: no questions found")
    if top_n < 1:
        raise ManifestError(f"--top-answers must be >= 1 (got {top_n})")
    vocab = answers if answers is not None else top_answers((it["answer"] for it in items), top_n)
    return Annotation("qa", split, items, answers=list(vocab), source=str(path))
