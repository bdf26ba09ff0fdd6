"""The loader's `texts` hook for downstream tasks: which texts (and labels) a shard video carries.

Videos are sharded once with their own captions; a task annotation decides what is asked about each
video. `TaskTexts` is built from an Annotation, holds a plain dict (so it pickles cheaply into
DataLoader workers) and answers `(sample key, shard captions) -> (texts, labels | None) | None`;
None drops a video that is not in the task's split before it is decoded.

    retrieval  texts = the item's texts (DiDeMo: one paragraph), labels None
    qa         texts = the video's questions, labels = answer ids (-1 outside the vocabulary);
               training drops the -1 questions (nothing to learn), evaluation keeps them (counted wrong)
    mcqa       evaluation: the 5 options of each item in order, labels 1 (right) / 0 (wrong);
               training: only the right option, labels None: multi-choice is fine-tuned as retrieval
               and scored over the options at test (REFERENCE §5.3)
"""

from __future__ import annotations

from snps3_ds.downstream.annotations import Annotation

Texts = tuple[list[str], list[int] | None]


class TaskTexts:
    """Picklable `(key, captions) -> (texts, labels | None) | None` for build_train/eval_loader(texts=...)."""

    def __init__(self, task: str, split: str, by_key: dict[str, Texts]) -> None:
        self.task, self.split, self.by_key = task, split, by_key

    def __call__(self, key: str, captions: list[str]) -> Texts | None:
        return self.by_key.get(key)

    def __len__(self) -> int:
        return len(self.by_key)

    def texts_of(self, key: str) -> list[str]:
        """The texts a video carries, in the order the loader keeps them (evaluation tables)."""
        found = self.by_key.get(key)
        if found is None:
            raise KeyError(f"video {key!r} is not in the {self.task} split {self.split!r}")
        return found[0]


def task_texts(annotation: Annotation, train: bool) -> TaskTexts:
    """The hook for this annotation's task; `train` picks the training form (see the module doc)."""
    builders = {"retrieval": _retrieval, "qa": _qa, "mcqa": _mcqa}
    if annotation.task not in builders:
        raise ValueError(f"{annotation.source or annotation.split}: key 'task': expected one of "
                         f"{sorted(builders)}, got {annotation.task!r}")
    by_key: dict[str, Texts] = {}
    for key, items in annotation.by_video().items():
        texts = builders[annotation.task](annotation, items, train)
        if texts is not None and texts[0]:
            by_key[key] = texts
    if not by_key:
        raise ValueError(f"{annotation.source or annotation.split}: no video has a usable text "
                         f"({annotation.task}, train={train})")
    return TaskTexts(annotation.task, annotation.split, by_key)


def _retrieval(annotation: Annotation, items: list[dict], train: bool) -> Texts:
    return [text for item in items for text in item["texts"]], None


def _qa(annotation: Annotation, items: list[dict], train: bool) -> Texts | None:
    pairs = [(item["question"], annotation.label_of(item["answer"])) for item in items]
    if train:
        pairs = [(q, label) for q, label in pairs if label >= 0]
    if not pairs:
        return None
    return [q for q, _ in pairs], [label for _, label in pairs]


def _mcqa(annotation: Annotation, items: list[dict], train: bool) -> Texts:
    if train:
        return [item["options"][item["answer"]] for item in items], None
    texts = [option for item in items for option in item["options"]]
    labels = [int(i == item["answer"]) for item in items for i in range(len(item["options"]))]
    return texts, labels
