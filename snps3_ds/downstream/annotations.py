"""Downstream-task annotation files: what a fine-tuning or evaluation task asks about which video.

Videos are sharded once; retrieval, open-ended QA and multi-choice QA are small JSON files that a
loader joins to the shards by sample key (`item["video"]` == the shard `__key__`). Both are made by the
dataset's one key function (e.g. `snps3_ds.datasets.msrvtt.key`, ending in `snps3_ds.datasets.base.safe_key`),
which its shard reader and its annotation reader share. On disk:

    {"format": "snps3_ds.annotation/1", "task": "retrieval" | "qa" | "mcqa", "split": NAME,
     "answers": [str, ...],                      # qa only: the answer vocabulary, label order
     "items": [...]}

Items per task (other keys, e.g. a question `id` or `type`, are kept and ignored here):
    retrieval  {"video": KEY, "texts": [str, ...]}   one item per video; every text is a query whose
                                                     ground truth is that video
    qa         {"video": KEY, "question": str, "answer": str}   one per question; the label is
                                                     `label_of(answer)`, -1 when out of vocabulary
    mcqa       {"video": KEY, "options": [5 str], "answer": int}   index of the right option
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "snps3_ds.annotation/1"
TASKS = ("retrieval", "qa", "mcqa")
MC_OPTIONS = 5
_KEY = re.compile(r"[A-Za-z0-9_\-]+")  # what safe_key produces: no dots, no slashes


class AnnotationError(ValueError):
    """An annotation file or item that breaks the format; the message names file, item and key."""


@dataclass
class Annotation:
    """One task split: its items and (qa) the answer vocabulary shared by train, val and test."""

    task: str  # "retrieval" | "qa" | "mcqa"
    split: str  # metric-name prefix, e.g. "msrvtt_1ka", "msrvtt_qa_test"
    items: list[dict[str, Any]]
    answers: list[str] | None = None  # qa only: vocabulary in label order (from the training split)
    source: str = ""  # the file it was read from, for error messages
    _labels: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def by_video(self) -> dict[str, list[dict[str, Any]]]:
        """Items grouped by video key; videos in first-seen order, items in file order."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for item in self.items:
            grouped.setdefault(item["video"], []).append(item)
        return grouped

    def label_of(self, answer: str) -> int:
        """The class index of a QA answer, or -1 when it is outside the vocabulary (counts as wrong
        at test; skipped in training). The lookup table is built once: do not edit `answers` after."""
        if self.answers is None:
            raise AnnotationError(f"{self.source or self.split}: label_of needs a qa annotation with "
                                  f"an answer vocabulary (task is {self.task!r})")
        if self._labels is None:
            self._labels = {answer: i for i, answer in enumerate(self.answers)}
        return self._labels.get(answer, -1)


def top_answers(answers: Iterable[str], n: int | None = None) -> list[str]:
    """The answer vocabulary: the `n` (all when None) most frequent answers of the training split, ties
    going to the answer seen first, so the label order is deterministic."""
    counts = Counter(answers)  # keys in first-appearance order
    first = {answer: i for i, answer in enumerate(counts)}
    return sorted(counts, key=lambda a: (-counts[a], first[a]))[:n]


def _fail(where: str, message: str) -> AnnotationError:
    return AnnotationError(f"{where}: {message}")


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_item(item: Any, task: str, where: str) -> None:
    """Raise naming `where` (file and item index) and the key when one item breaks its task's form."""
    if not isinstance(item, dict):
        raise _fail(where, f"expected an object, got {type(item).__name__}")
    video = item.get("video")
    if not isinstance(video, str) or not _KEY.fullmatch(video):
        raise _fail(where, f"key 'video': expected a shard sample key ([A-Za-z0-9_-]+), got {video!r}")
    if task == "retrieval":
        texts = item.get("texts")
        if not isinstance(texts, list) or not texts or not all(_is_text(t) for t in texts):
            raise _fail(where, f"key 'texts': expected a non-empty list of non-empty strings, got {texts!r}")
    elif task == "qa":
        for key in ("question", "answer"):
            if not _is_text(item.get(key)):
                raise _fail(where, f"key {key!r}: expected a non-empty string, got {item.get(key)!r}")
    else:
        options, answer = item.get("options"), item.get("answer")
        if (not isinstance(options, list) or len(options) != MC_OPTIONS
                or not all(_is_text(o) for o in options)):
            raise _fail(where, f"key 'options': expected a list of {MC_OPTIONS} non-empty strings, "
                               f"got {options!r}")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < MC_OPTIONS:
            raise _fail(where, f"key 'answer': expected an int index in 0..{MC_OPTIONS - 1}, got {answer!r}")


def _check_answers(answers: Any, task: str, where: str) -> None:
    if task != "qa":
        if answers is not None:
            raise _fail(where, f"key 'answers': only qa annotations have an answer vocabulary (task {task!r})")
        return
    if not isinstance(answers, list) or not answers or not all(_is_text(a) for a in answers):
        raise _fail(where, "key 'answers': expected a non-empty list of answer strings (the training "
                           "vocabulary in label order)")
    if len(set(answers)) != len(answers):
        duplicate = next(a for i, a in enumerate(answers) if a in answers[:i])
        raise _fail(where, f"key 'answers': {duplicate!r} appears twice; labels must be unique")


def validate(ann: Annotation) -> None:
    """Check task, split, vocabulary and every item; retrieval has one item per video."""
    where = ann.source or "<annotation>"
    if ann.task not in TASKS:
        raise _fail(where, f"key 'task': expected one of {TASKS}, got {ann.task!r}")
    if not _is_text(ann.split):
        raise _fail(where, f"key 'split': expected a non-empty name (metric prefix), got {ann.split!r}")
    _check_answers(ann.answers, ann.task, where)
    if not isinstance(ann.items, list) or not ann.items:
        raise _fail(where, f"key 'items': expected a non-empty list, got {ann.items!r:.60}")
    seen: set[str] = set()
    for i, item in enumerate(ann.items):
        _check_item(item, ann.task, f"{where}: items[{i}]")
        if ann.task == "retrieval":
            if item["video"] in seen:
                raise _fail(f"{where}: items[{i}]", f"key 'video': {item['video']!r} appears twice; "
                                                    f"retrieval has one item per video (merge its texts)")
            seen.add(item["video"])


def load_annotation(path: str | Path) -> Annotation:
    """Read and validate an annotation file; errors name the file, the item index and the key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object with format/task/split/items")
    if data.get("format") != FORMAT:
        raise AnnotationError(f"{path}: key 'format': expected {FORMAT!r}, got {data.get('format')!r}")
    missing = [k for k in ("task", "split", "items") if k not in data]
    if missing:
        raise AnnotationError(f"{path}: missing key(s) {missing}")
    ann = Annotation(task=data["task"], split=data["split"], items=data["items"],
                     answers=data.get("answers"), source=str(path))
    validate(ann)
    return ann


def write_annotation(path: str | Path, ann: Annotation) -> None:
    """Validate, then write atomically (temp file + rename) with one item per line, so the file is
    readable and diffs stay small."""
    path = Path(path)
    validate(Annotation(ann.task, ann.split, ann.items, ann.answers, source=str(path)))
    head = {"format": FORMAT, "task": ann.task, "split": ann.split}
    if ann.answers is not None:
        head["answers"] = ann.answers
    lines = [json.dumps(head, ensure_ascii=False)[:-1] + ', "items": [']
    lines.append(",\n".join(json.dumps(item, ensure_ascii=False) for item in ann.items))
    lines.append("]}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
