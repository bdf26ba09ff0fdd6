"""The retrieval gallery (`launch/evaluate.py --report DIR`): what a person looks at to see where a model fails.

Which queries a page shows: the worst-ranked text queries (the same selection as the W&B worst-query table,
snps3_ds.evaluation.retrieval.worst_order) and a seeded random sample of the others, each with its top-5
videos; for QA and multi-choice, the wrongly answered questions and a seeded random sample of the rest.
The page itself is written by snps3_ds.reports.gallery_html.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

from snps3_ds.downstream.annotations import Annotation
from snps3_ds.evaluation.features import EvalFeatures
from snps3_ds.evaluation.retrieval import RetrievalResult, query_rows, worst_order
from snps3_ds.ranking import query_ranks
from snps3_ds.reports.gallery_html import GalleryPage, render
from snps3_ds.reports.thumbnails import write_strips

PER_GROUP = 10  # queries (questions) in each of the worst and the random group
TOP = 5  # retrieved videos shown per query
CURVES = "curves.png"  # what launch/plot.py writes into a run folder


def split_groups(count: int, wrong: list[int], per_group: int, seed: int) -> list[tuple[str, int]]:
    """(group, index): the first `per_group` of `wrong` (already worst first) as "worst", then a seeded random
    sample of the other indices in [0, count) as "random", in index order."""
    worst = wrong[:per_group]
    rest = sorted(set(range(count)) - set(worst))
    sample = sorted(random.Random(seed).sample(rest, min(per_group, len(rest))))
    return [("worst", i) for i in worst] + [("random", i) for i in sample]


def retrieval_queries(result: RetrievalResult, text_of: Callable[[EvalFeatures, int], str] | None = None,
                      per_group: int = PER_GROUP, seed: int = 0) -> list[dict]:
    """Rows of snps3_ds.evaluation.retrieval.query_rows with `top` (the TOP best videos), plus `group` and
    `truth` (every right video's key), under the headline scores the metrics were computed from."""
    if result.scores is None or result.truth is None or result.features is None:
        raise ValueError("the retrieval result carries no scores (was it made by score_retrieval?)")
    feats, truth = result.features, result.truth
    ranks = query_ranks(result.scores, truth)
    chosen = split_groups(len(ranks), worst_order(ranks, len(ranks)), per_group, seed)
    rows = query_rows(result.scores, feats, [i for _, i in chosen], ranks, text_of, result.similarity, TOP)
    for (group, i), row in zip(chosen, rows):
        row["group"] = group
        row["truth"] = [feats.keys[int(j)] for j in truth[i].nonzero().flatten()]
        row["gallery_size"] = feats.num_videos
    return rows


def question_rows(task: str, records: list[dict], annotation: Annotation, per_group: int = PER_GROUP,
                  seed: int = 0) -> list[dict]:
    """QA / multi-choice records (snps3_ds.evaluation.qa, qa_zero_shot, mcqa) as rows with the annotation's
    text: group, video, question, options (multi-choice; None for QA), prediction, answer, correct (and for
    multi-choice the option indices `choice` and `answer_index`)."""
    by_video = annotation.by_video()
    rows = []
    for record in records:
        if task == "mcqa":
            item = by_video[record["video"]][record["question"]]
            options = list(item["options"])
            rows.append({"video": record["video"], "question": item.get("question", ""), "options": options,
                         "prediction": options[record["choice"]], "answer": options[item["answer"]],
                         "correct": bool(record["right"]), "choice": record["choice"], "answer_index": item["answer"]})
        else:
            item = by_video[record["video"]][record["order"]]
            label, prediction = record["label"], record["prediction"]
            rows.append({"video": record["video"], "question": item["question"], "options": None,
                         "prediction": annotation.answers[prediction], "answer": item["answer"],
                         "correct": label >= 0 and prediction == label})
    wrong = [i for i, row in enumerate(rows) if not row["correct"]]
    return [{"group": group, **rows[i]} for group, i in split_groups(len(rows), wrong, per_group, seed)]


def find_curves(checkpoint: str | None, levels: int = 3) -> Path | None:
    """The curves PNG of the run a checkpoint comes from: in the checkpoint folder or up to `levels` folders
    above it (RUN_DIR/checkpoints/TAG, RUN_DIR/export/model.safetensors). None without a checkpoint: an
    untrained model has no run."""
    if not checkpoint:
        return None
    path = Path(checkpoint).resolve()
    for folder in [path, *path.parents][:levels + 1]:
        if (folder / CURVES).is_file():
            return folder / CURVES
    return None


def write_gallery(out_dir: str | Path, page: GalleryPage) -> Path:
    """DIR/index.html, its thumbnails under DIR/thumbs and the curves PNG: a page that works from file://."""
    out = Path(out_dir)
    shutil.rmtree(out / "thumbs", ignore_errors=True)  # an earlier page's thumbnails would linger unlinked
    out.mkdir(parents=True, exist_ok=True)
    # a query's own video stands for its ground truth (a caption string may have many right videos)
    keys = [k for row in page.queries for k in [*row["top"], row["video"]]] + [r["video"] for r in page.questions]
    strips = write_strips(page.shards, keys, out)
    curves = None
    if page.curves is not None:
        shutil.copyfile(page.curves, out / CURVES)
        curves = CURVES
    index = out / "index.html"
    index.write_text(render(page, strips, curves), encoding="utf-8")
    return index
