"""Downstream tasks on the synthetic demo corpus: retrieval, open-ended QA and multi-choice QA.

Writes annotation files (snps3_ds.downstream.annotations) into `<corpus>/tasks/`:
    retrieval_{train,test}.json  the split's captions              split demo_train / demo_test
    qa_{train,test}.json         questions on the scene facts      split demo_qa_train / demo_qa_test
    mc_{train,test}.json         true caption + 4 near misses      split demo_mc_train / demo_mc_test
    *_val.json                   the same on the val split, when the corpus has one (split demo_val, ...):
                                 what a fine-tune chooses after training (the joint re-ranking weight)

The facts (background, each shape's colour, shape, size and motion) and the captions are read from the
`json` member of each sample in the existing shards: the same seeded generator wrote them beside the
clip, no video is rendered or decoded, and the shards are only read. (Captions cannot be regenerated
from the seed without rendering: trajectory sampling draws from the clip RNG first.) Question and
distractor choices draw from their own RNG per clip, seeded by (seed, split, clip index), so the output
is the same for a given corpus and seed.

Question types (answers from the training split form the vocabulary):
    color      "what colour is the <shape>?"           asked only when the reference is unique in the clip
                                                       (the size is added when two shapes share a shape)
    direction  "which way does the <colour> <shape> move?"   left/right/up/down/in a circle/nowhere
    shape      "what shape is moving <direction>?"     asked only when one shape in the clip moves so
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from snps3_ds.demo.corpus import MOTIONS, SHAPES, SPLITS, ShapeSpec, one_caption, visible_colors
from snps3_ds.downstream.annotations import MC_OPTIONS, Annotation, top_answers, write_annotation

TASK_STREAM = 1  # appended to (seed, split, index) so task draws never reuse a clip's RNG stream
MOTION_ANSWERS = {"left": "left", "right": "right", "up": "up", "down": "down",
                  "circle": "in a circle", "still": "nowhere"}
SHAPE_QUESTIONS = {"left": "what shape is moving left?", "right": "what shape is moving right?",
                   "up": "what shape is moving up?", "down": "what shape is moving down?",
                   "circle": "what shape is moving in a circle?", "still": "what shape is staying still?"}
QUESTION_TYPES = ("color", "direction", "shape")


@dataclass(frozen=True)
class Clip:
    """One demo sample's facts, as stored in its shard json."""

    key: str
    index: int
    captions: list[str]
    background: str
    shapes: list[ShapeSpec]


# --- reading the corpus -------------------------------------------------------------------------
def _clip(split: str, key: str, meta: dict[str, Any], where: str) -> Clip:
    match = re.fullmatch(rf"{split}_(\d+)", key)
    attributes = meta.get("attributes")
    if match is None or not isinstance(attributes, dict):
        raise ValueError(f"{where}: sample {key!r} is not a demo clip (expected key {split}_NNNNNN and "
                         f"'attributes' in its json); is this a make_demo_corpus folder?")
    try:
        shapes = [ShapeSpec(**shape) for shape in attributes["shapes"]]
        return Clip(key, int(match.group(1)), list(meta["captions"]), attributes["background"], shapes)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: sample {key!r}: json 'attributes' must hold 'background' and 'shapes' "
                         f"of {{color, shape, size, motion}}, and 'captions' must be a list ({err})") from None


def read_clips(corpus: Path, split: str) -> list[Clip]:
    """The clips of one split in shard order, from the json members only (tar headers are skipped
    over, so this is fast)."""
    manifest_path = corpus / f"{split}.shards.json"
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} not found: the tasks need a demo corpus with train and test "
                         f"splits (make_demo_corpus.py --out {corpus} --train N --test M)")
    manifest = json.loads(manifest_path.read_text())
    clips = []
    for shard in manifest["shards"]:
        with tarfile.open(corpus / shard["path"]) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    clips.append(_clip(split, member.name.split(".", 1)[0], meta, shard["path"]))
    if len(clips) != manifest["num_samples"]:
        raise ValueError(f"{manifest_path}: lists {manifest['num_samples']} samples, its shards hold "
                         f"{len(clips)} json members")
    return clips


def task_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG for one clip's task draws, independent of clip order and of the clip's own stream."""
    return np.random.default_rng([seed, SPLITS[split], index, TASK_STREAM])


# --- questions ------------------------------------------------------------------------------------
def _reference(spec: ShapeSpec, shapes: list[ShapeSpec]) -> str | None:
    """How to name `spec` without its colour so that only it fits: its shape, else size + shape."""
    if sum(s.shape == spec.shape for s in shapes) == 1:
        return spec.shape
    if sum(s.shape == spec.shape and s.size == spec.size for s in shapes) == 1:
        return f"{spec.size} {spec.shape}"
    return None


def clip_questions(shapes: list[ShapeSpec]) -> list[dict[str, str]]:
    """Every unambiguous question about one clip: {type, question, answer}."""
    out = []
    for spec in shapes:
        reference = _reference(spec, shapes)
        if reference is not None:
            out.append({"type": "color", "question": f"what colour is the {reference}?", "answer": spec.color})
    for spec in shapes:
        out.append({"type": "direction", "question": f"which way does the {spec.color} {spec.shape} move?",
                    "answer": MOTION_ANSWERS[spec.motion]})
    for spec in shapes:
        if sum(s.motion == spec.motion for s in shapes) == 1:
            out.append({"type": "shape", "question": SHAPE_QUESTIONS[spec.motion], "answer": spec.shape})
    return out


def qa_items(clips: list[Clip]) -> list[dict[str, str]]:
    return [{"video": clip.key, **q} for clip in clips for q in clip_questions(clip.shapes)]


# --- multiple choice ------------------------------------------------------------------------------
def _scene(shapes: list[ShapeSpec]) -> tuple[tuple[str, str, str], ...]:
    """What a caption asserts, order-free: each shape's (colour, shape, motion)."""
    return tuple(sorted((s.color, s.shape, s.motion) for s in shapes))


def _near_miss(rng: np.random.Generator, shapes: list[ShapeSpec], background: str) -> list[ShapeSpec]:
    """The scene with one or two attributes (colour, motion, shape) changed; colours stay distinct
    and visible on the background, so the wrong options are not implausible from the text alone."""
    new = list(shapes)
    for _ in range(int(rng.integers(1, 3))):
        i = int(rng.integers(len(new)))
        attribute = str(rng.choice(["color", "motion", "shape"]))
        if attribute == "color":
            pool = [c for c in visible_colors(background) if c not in {s.color for s in new}]
        else:
            pool = [v for v in (MOTIONS if attribute == "motion" else SHAPES) if v != getattr(new[i], attribute)]
        new[i] = replace(new[i], **{attribute: str(rng.choice(pool))})
    return new


def mc_item(rng: np.random.Generator, clip: Clip) -> dict[str, Any]:
    """5 captions phrased alike (one template and phrase draw) for the true scene and 4 near misses."""
    phrasing = int(rng.integers(2**32))

    def caption(shapes: list[ShapeSpec]) -> str:
        return one_caption(np.random.default_rng(phrasing), clip.background, shapes)

    options, scenes = [caption(clip.shapes)], {_scene(clip.shapes)}
    for _ in range(500):
        shapes = _near_miss(rng, clip.shapes, clip.background)
        text = caption(shapes)
        if _scene(shapes) not in scenes and text not in options:
            options.append(text)
            scenes.add(_scene(shapes))
            if len(options) == MC_OPTIONS:
                break
    else:
        raise RuntimeError(f"{clip.key}: could not find {MC_OPTIONS - 1} distinct near-miss captions")
    answer = int(rng.integers(MC_OPTIONS))
    options[0], options[answer] = options[answer], options[0]
    return {"video": clip.key, "options": options, "answer": answer}


# --- the task files -------------------------------------------------------------------------------
def build_tasks(clips: dict[str, list[Clip]], seed: int) -> dict[str, Annotation]:
    """Three annotations per split of `clips` (train and test, and val when given), keyed by file stem; the
    QA vocabulary is every training answer."""
    qa = {split: qa_items(split_clips) for split, split_clips in clips.items()}
    answers = top_answers(item["answer"] for item in qa["train"])
    tasks = {}
    for split in clips:
        tasks[f"retrieval_{split}"] = Annotation(
            "retrieval", f"demo_{split}", [{"video": c.key, "texts": c.captions} for c in clips[split]])
        tasks[f"qa_{split}"] = Annotation("qa", f"demo_qa_{split}", qa[split], answers=answers)
        tasks[f"mc_{split}"] = Annotation(
            "mcqa", f"demo_mc_{split}", [mc_item(task_rng(seed, split, c.index), c) for c in clips[split]])
    return tasks


def chance(tasks: dict[str, Annotation]) -> dict[str, dict[str, float]]:
    """Per question type: uniform guessing among that type's answers, and always giving the type's
    most frequent training answer, scored on the test questions."""
    out = {}
    for kind in QUESTION_TYPES:
        train = Counter(i["answer"] for i in tasks["qa_train"].items if i["type"] == kind)
        test = [i["answer"] for i in tasks["qa_test"].items if i["type"] == kind]
        majority = train.most_common(1)[0][0] if train else None
        out[kind] = {"uniform": round(1 / max(len(train), 1), 4),
                     "majority": round(sum(a == majority for a in test) / max(len(test), 1), 4),
                     "test_questions": len(test)}
    return out


def make_demo_tasks(corpus: str | Path, seed: int = 0, out: str | Path | None = None) -> dict[str, Any]:
    """Write the task files for the corpus in `corpus` (into `out`, default `<corpus>/tasks`); returns a
    summary: items per file, vocabulary size, test coverage and chance levels."""
    corpus = Path(corpus)
    out = corpus / "tasks" if out is None else Path(out)
    splits = ["train", "test"] + (["val"] if (corpus / "val.shards.json").is_file() else [])
    clips = {split: read_clips(corpus, split) for split in splits}
    tasks = build_tasks(clips, seed)
    for name, ann in tasks.items():
        write_annotation(out / f"{name}.json", ann)
    qa_test = tasks["qa_test"]
    covered = sum(qa_test.label_of(i["answer"]) >= 0 for i in qa_test.items)
    return {"out": str(out), "seed": seed, "files": {f"{n}.json": len(a.items) for n, a in tasks.items()},
            "answers": len(tasks["qa_train"].answers or []),
            "qa_test_coverage": round(covered / max(len(qa_test.items), 1), 4),
            "chance": {**chance(tasks), "mc": 1 / MC_OPTIONS}}


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [f"tasks in {summary['out']} (seed {summary['seed']}):",
             "  " + ", ".join(f"{name} {n}" for name, n in summary["files"].items()),
             f"  QA vocabulary {summary['answers']} answers; covers {100 * summary['qa_test_coverage']:.1f}% "
             f"of test questions"]
    for kind in QUESTION_TYPES:
        c = summary["chance"][kind]
        lines.append(f"  chance {kind:9s} uniform {100 * c['uniform']:.1f}%  majority answer "
                     f"{100 * c['majority']:.1f}%  ({c['test_questions']} test questions)")
    lines.append(f"  chance mc        {100 * summary['chance']['mc']:.1f}%")
    return "\n".join(lines)
