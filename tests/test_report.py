"""`launch/evaluate.py --report DIR`: the static gallery of a tiny evaluation, opened in a real headless Chromium.

The checks read the browser's loaded page (DevTools protocol over a pipe, tests/cdp_pipe.py): every thumbnail
decoded (naturalWidth > 0), the metric table equal to the evaluation JSON, user text shown as text (escaped),
the ground truth marked; for QA and multi-choice the question, prediction and answer of each shown question.
Chromium is installed with apt when missing and we are root; otherwise the browser tests skip with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cdp_pipe import Chromium, find_chromium
from conftest import TINY_RECIPE, tiny_overrides
from debian_packages import require_programs
from snps3_ds.config import RunConfig
from snps3_ds.downstream.annotations import Annotation, write_annotation
from snps3_ds.models.factory import build_model
from snps3_ds.reports import curves
from snps3_ds.reports.gallery import PER_GROUP, split_groups
from snps3_ds.reports.thumbnails import write_strips
from snps3_ds.run import evaluate

KEYS = [f"test_{i:06d}" for i in range(8)]  # the tiny corpus's held-out sample keys
HOSTILE = 'a <b>bold</b> & "quoted" <img src=x onerror=alert(1)> square'  # must show as text, run nothing
RETRIEVAL = Annotation("retrieval", "demo_test", [
    {"video": KEYS[0], "texts": ["a red circle moves left", HOSTILE]},
    {"video": KEYS[1], "texts": ["a blue square rises"]},
    {"video": KEYS[2], "texts": ["a green triangle falls", "a triangle drops"]},
    {"video": KEYS[3], "texts": ["an orange diamond stays still"]},
    {"video": KEYS[4], "texts": ["a purple circle loops around", "two shapes move"]},
    {"video": KEYS[5], "texts": ["a white square on black"]},
    {"video": KEYS[6], "texts": ["a small shape"]},
    {"video": KEYS[7], "texts": ["a big shape"]},
])
QA = Annotation("qa", "demo_qa_test", [
    {"video": KEYS[0], "question": "what <color> is the circle?", "answer": "red"},
    {"video": KEYS[1], "question": "what color is the square?", "answer": "magenta"},  # out of vocabulary
    {"video": KEYS[3], "question": "which direction does it move?", "answer": "right"},
], answers=["red", "green", "blue", "left", "right"])
MC = Annotation("mcqa", "demo_mc", [
    {"video": KEYS[i], "options": [f"a {c} shape moves" for c in ("red", "green", "blue", "white", "purple")],
     "answer": i % 5} for i in (0, 2, 5)])

PAGE_STATE = """(() => ({
  images: Array.from(document.images).map(i => ({src: i.getAttribute('src'), width: i.naturalWidth,
                                                  complete: i.complete})),
  metrics: Array.from(document.querySelectorAll('#metrics tr[data-key]')).map(r => ({
    key: r.querySelector('th').innerText, shown: r.querySelector('td.value').innerText, exact: r.dataset.value})),
  queries: Array.from(document.querySelectorAll('.query')).map(q => ({
    group: q.classList.contains('worst') ? 'worst' : 'random', caption: q.querySelector('.caption').innerText,
    markup: q.querySelector('.caption').children.length, rank: Number(q.querySelector('.rank').innerText),
    candidates: q.querySelectorAll('figure').length, truth: q.querySelectorAll('figure.gt').length})),
  questions: Array.from(document.querySelectorAll('table.questions tr.right, table.questions tr.wrong')).map(r => ({
    video: r.querySelector('td .key').innerText, question: r.querySelector('td.question .text').textContent,
    prediction: r.querySelector('td.prediction').innerText, answer: r.querySelector('td.answer').innerText,
    verdict: r.querySelector('td.verdict').innerText, options: r.querySelectorAll('li').length,
    marked: r.querySelectorAll('li.answer').length})),
  curves: !!document.querySelector('a[href="curves.png"] img'),
  alerts: typeof window.__alerted !== 'undefined',
  external: document.querySelectorAll('script, link, iframe, object, embed').length,
}))()"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed when missing (tests/debian_packages.py)."""
    return find_chromium() or require_programs({"chromium": "chromium"}, ["chromium"])["chromium"]


def run_evaluation(corpus: Path, tmp_path: Path, annotation: Annotation, *args: str) -> tuple[dict, Path]:
    """evaluate.main with --out and --report; (the JSON it wrote, the report folder)."""
    write_annotation(tmp_path / "annotation.json", annotation)
    out, report = tmp_path / "eval.json", tmp_path / "report"
    evaluate.main(["--config", str(TINY_RECIPE), "--annotation", str(tmp_path / "annotation.json"), "--out", str(out),
                   "--report", str(report), *args, *tiny_overrides(corpus)])
    return json.loads(out.read_text()), report


def page_state(binary: str, page: Path, screenshot: Path) -> dict:
    with Chromium(binary, width=1400) as browser:
        browser.call("Page.addScriptToEvaluateOnNewDocument", source="window.alert = () => {window.__alerted=true;}")
        browser.open(page.resolve().as_uri())
        state = browser.evaluate(PAGE_STATE)
        browser.screenshot(screenshot)
    return state


def check_common(state: dict, result: dict, report: Path) -> None:
    """Every image decoded from a relative path beside the page; the table equals the JSON's metrics."""
    assert state["images"], "the page shows no image"
    for image in state["images"]:
        assert image["complete"] and image["width"] > 0, f"{image['src']} did not load"
        assert "://" not in image["src"] and not image["src"].startswith("/"), image["src"]
        assert (report / image["src"]).is_file()
    shown = {row["key"]: row for row in state["metrics"]}
    assert set(shown) == set(result["metrics"])
    for key, value in result["metrics"].items():
        assert float(shown[key]["exact"]) == value, key
        assert float(shown[key]["shown"]) == pytest.approx(value, abs=0.005), key
    assert not state["alerts"], "user text ran as markup"
    assert state["external"] == 0, "the page must stand alone: no scripts, stylesheets or frames to fetch"


def test_report_retrieval_gallery_in_chromium(chromium: str, tiny_corpus: Path, tiny_config: RunConfig, tokenizer,
                                              tmp_path: Path) -> None:
    run_dir = tmp_path / "run"  # a run folder with curves (launch/plot.py) and an export, as fine-tuning leaves
    (run_dir / "export").mkdir(parents=True)
    rows = [{"step": s, "train/loss": 3.0 - s * 0.5, "val/t2v/R@1": 10.0 * s} for s in range(1, 4)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves.main([str(run_dir)])
    torch.manual_seed(3)
    model = build_model(tiny_config.model, tokenizer)
    save_file({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()},
              str(run_dir / "export" / "model.safetensors"))
    result, report = run_evaluation(tiny_corpus, tmp_path, RETRIEVAL, "--checkpoint",
                                    str(run_dir / "export" / "model.safetensors"))
    state = page_state(chromium, report / "index.html", tmp_path / "retrieval.png")
    print(f"screenshot: {tmp_path / 'retrieval.png'}")
    check_common(state, result, report)
    assert state["curves"] and (report / "curves.png").is_file()
    texts = [t for item in RETRIEVAL.items for t in item["texts"]]
    queries = state["queries"]
    assert [q["group"] for q in queries] == ["worst"] * PER_GROUP + ["random"] * (len(texts) - PER_GROUP)
    assert sorted(q["caption"] for q in queries) == sorted(texts)  # the hostile caption shown as its own text
    assert all(q["markup"] == 0 for q in queries)
    worst_ranks = [q["rank"] for q in queries if q["group"] == "worst"]
    assert worst_ranks == sorted(worst_ranks, reverse=True)
    assert [row["rank"] for row in result["worst"][:PER_GROUP]] == worst_ranks  # the W&B table's selection
    for q in queries:  # top-5, plus the ground truth's own strip when it ranked below them; one marked each
        assert q["candidates"] == 5 + (q["rank"] > 5) and q["truth"] >= 1
    assert len(state["images"]) == 4 * sum(q["candidates"] for q in queries) + 1  # 4 frames each, + curves


@pytest.mark.parametrize("annotation", [QA, MC], ids=["qa", "mcqa"])
def test_report_questions_gallery_in_chromium(chromium: str, tiny_corpus: Path, tmp_path: Path,
                                              annotation: Annotation) -> None:
    result, report = run_evaluation(tiny_corpus, tmp_path, annotation)
    state = page_state(chromium, report / "index.html", tmp_path / f"{annotation.task}.png")
    check_common(state, result, report)
    assert not state["queries"] and not state["curves"]  # no checkpoint: no run, no curves
    questions = state["questions"]
    assert len(questions) == len(annotation.items)
    for row in questions:
        item = next(i for i in annotation.items
                    if (i["video"], i.get("question", "")) == (row["video"], row["question"]))
        if annotation.task == "mcqa":
            assert row["options"] == 5 and row["marked"] == 1
            assert row["answer"] == item["options"][item["answer"]] and row["prediction"] in item["options"]
        else:
            assert row["answer"] == item["answer"] and row["prediction"] in annotation.answers
        assert row["verdict"] == ("right" if row["prediction"] == row["answer"] else "wrong")
    assert sorted(r["video"] for r in questions) == sorted(i["video"] for i in annotation.items)


def test_report_random_sample_is_seeded_and_the_worst_come_first() -> None:
    groups = split_groups(30, [29, 3, 7], per_group=2, seed=5)
    assert groups[:2] == [("worst", 29), ("worst", 3)] and len(groups) == 4
    assert groups == split_groups(30, [29, 3, 7], per_group=2, seed=5)
    assert {i for _, i in groups[2:]}.isdisjoint({29, 3})
    assert split_groups(3, [], per_group=10, seed=0) == [("random", 0), ("random", 1), ("random", 2)]


def test_report_thumbnails_name_what_they_cannot_show(tiny_corpus: Path, tmp_path: Path) -> None:
    strips = write_strips([str(tiny_corpus / "test")], [KEYS[2], "no_such_video"], tmp_path)
    assert strips.frames[KEYS[2]] == [f"thumbs/v0000-{t}.jpg" for t in range(4)]
    assert strips.missing == {"no_such_video": "not in the evaluation shards"}
