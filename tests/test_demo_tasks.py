"""Demo downstream tasks (data_prep/demo_tasks.py) built on the tiny demo corpus of conftest.

Every test name contains `demo_tasks`. The corpus fixture is conftest's session `tiny_corpus`
(make_demo_corpus(tmp, train=24, test=8, seed=0, workers=1, shards=ShardLayout(10))); tasks are written to
their own folder so the shared corpus is left as it is.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
from snps3_ds.demo.tasks import MOTION_ANSWERS, SHAPE_QUESTIONS, make_demo_tasks
from snps3_ds.demo.cli import main
from snps3_ds.demo.corpus import COLORS, MOTION_PHRASES, SHAPES
from snps3_ds.downstream.annotations import load_annotation

FILES = [f"{task}_{split}.json" for task in ("retrieval", "qa", "mc") for split in ("train", "test")]
_BACKGROUND = re.compile(r"(on|over|against|in front of) a (black|grey|white|dark blue) background")
_PHRASES = sorted(((p, m) for m, ps in MOTION_PHRASES.items() for p in ps), key=lambda pm: -len(pm[0]))


def parse_caption(caption: str) -> tuple[tuple[str, str, str], ...]:
    """The (colour, shape, motion) triples a demo caption asserts, in the templates' np-vp order."""
    text = _BACKGROUND.sub(" ", caption)
    for phrase, motion in _PHRASES:  # motion phrases first: "circles around" holds a shape word
        text = text.replace(phrase, f" MOTION_{motion} ")
    words = re.findall(r"[a-zA-Z_]+", text)
    colors = [w for w in words if w in COLORS]
    shapes = [w for w in words if w in SHAPES]
    motions = [w[len("MOTION_"):] for w in words if w.startswith("MOTION_")]
    assert len(colors) == len(shapes) == len(motions), caption
    return tuple(sorted(zip(colors, shapes, motions)))


def _scene(meta: dict) -> tuple[tuple[str, str, str], ...]:
    return tuple(sorted((s["color"], s["shape"], s["motion"]) for s in meta["attributes"]["shapes"]))


def _shard_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def metas(tiny_corpus: Path) -> dict[str, dict]:
    """Every sample's json from the shards, by key."""
    out = {}
    for tar_path in sorted(tiny_corpus.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    out[member.name.split(".")[0]] = json.loads(tar.extractfile(member).read())
    return out


@pytest.fixture(scope="module")
def tasks(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tasks")
    return out, make_demo_tasks(tiny_corpus, seed=0, out=out)


def test_demo_tasks_files_keys_and_splits(tasks: tuple[Path, dict], metas: dict[str, dict]) -> None:
    out, summary = tasks
    assert sorted(summary["files"]) == sorted(FILES)
    splits = {}
    for name in FILES:
        ann = load_annotation(out / name)  # validates the format
        split = "train" if "train" in name else "test"
        assert all(i["video"] in metas and i["video"].startswith(split + "_") for i in ann.items), name
        splits[name] = ann.split
        assert summary["files"][name] == len(ann.items)
    assert splits["retrieval_test.json"] == "demo_test" and splits["retrieval_train.json"] == "demo_train"
    assert splits["qa_test.json"] == "demo_qa_test" and splits["mc_train.json"] == "demo_mc_train"


def test_demo_tasks_parser_reads_every_shard_caption(metas: dict[str, dict]) -> None:
    for meta in metas.values():
        for caption in meta["captions"]:
            assert parse_caption(caption) == _scene(meta), caption


def test_demo_tasks_retrieval_uses_the_shard_captions(tasks: tuple[Path, dict], metas: dict) -> None:
    out, _ = tasks
    for split, n in (("train", 24), ("test", 8)):
        ann = load_annotation(out / f"retrieval_{split}.json")
        assert [i["video"] for i in ann.items] == [f"{split}_{k:06d}" for k in range(n)]
        assert all(i["texts"] == metas[i["video"]]["captions"] for i in ann.items)


def test_demo_tasks_questions_are_answerable(tasks: tuple[Path, dict], metas: dict) -> None:
    out, summary = tasks
    train, test = load_annotation(out / "qa_train.json"), load_annotation(out / "qa_test.json")
    assert train.answers == test.answers and len(train.answers) == summary["answers"]
    assert set(train.answers) == {i["answer"] for i in train.items}
    assert all(train.label_of(i["answer"]) >= 0 for i in train.items)
    motion_of = {answer: motion for motion, answer in MOTION_ANSWERS.items()}
    for item in train.items + test.items:
        shapes = metas[item["video"]]["attributes"]["shapes"]
        question, answer = item["question"], item["answer"]
        if item["type"] == "color":  # the named shape (and size) fits exactly one shape: the answer
            ref = question.removeprefix("what colour is the ").removesuffix("?").split()
            fits = [s for s in shapes if s["shape"] == ref[-1] and (len(ref) == 1 or s["size"] == ref[0])]
            assert [s["color"] for s in fits] == [answer], (question, shapes)
        elif item["type"] == "direction":
            color, shape = question.removeprefix("which way does the ").removesuffix(" move?").split()
            named = [s["motion"] for s in shapes if (s["color"], s["shape"]) == (color, shape)]
            assert named == [motion_of[answer]], (question, shapes)
        else:
            motion = {q: m for m, q in SHAPE_QUESTIONS.items()}[question]
            assert [s["shape"] for s in shapes if s["motion"] == motion] == [answer], (question, shapes)
        for caption in metas[item["video"]]["captions"]:  # consistent with what the captions say
            assert answer in caption or item["type"] == "direction" and any(
                p in caption for p in MOTION_PHRASES[motion_of[answer]])
    assert {i["type"] for i in train.items} == {"color", "direction", "shape"}


def test_demo_tasks_mc_has_one_right_option(tasks: tuple[Path, dict], metas: dict) -> None:
    out, _ = tasks
    answers = []
    for split in ("train", "test"):
        for item in load_annotation(out / f"mc_{split}.json").items:
            options, truth = item["options"], _scene(metas[item["video"]])
            assert len(options) == 5 and len(set(options)) == 5
            assert [parse_caption(o) == truth for o in options].count(True) == 1
            assert parse_caption(options[item["answer"]]) == truth
            if len(truth) == 1:  # near misses: one or two of colour, shape, motion changed
                changed = [sum(a != b for a, b in zip(truth[0], parse_caption(o)[0])) for o in options]
                assert sorted(changed)[0] == 0 and all(1 <= c <= 2 for c in sorted(changed)[1:])
            answers.append(item["answer"])
    assert len(set(answers)) > 2  # the right option is not always in one place


def test_demo_tasks_deterministic_and_seeded(tiny_corpus: Path, tasks: tuple[Path, dict],
                                             tmp_path: Path) -> None:
    out, summary = tasks
    again = make_demo_tasks(tiny_corpus, seed=0, out=tmp_path / "again")
    other = make_demo_tasks(tiny_corpus, seed=1, out=tmp_path / "other")
    assert again == {**summary, "out": str(tmp_path / "again")}
    for name in FILES:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert (out / "qa_test.json").read_bytes() == (tmp_path / "other" / "qa_test.json").read_bytes()
    assert (out / "mc_train.json").read_bytes() != (tmp_path / "other" / "mc_train.json").read_bytes()
    assert other["chance"]["mc"] == 0.2


def test_demo_tasks_summary_chance_levels(tasks: tuple[Path, dict]) -> None:
    _, summary = tasks
    assert summary["chance"]["shape"]["uniform"] == 0.25
    assert summary["chance"]["direction"]["uniform"] == pytest.approx(1 / 6, abs=1e-3)
    assert summary["answers"] <= len(COLORS) + len(MOTION_ANSWERS) + len(SHAPES)


def test_demo_tasks_cli_tasks_only_leaves_shards_untouched(tiny_corpus: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus, ignore=shutil.ignore_patterns("tasks"))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in _shard_files(corpus)}
    result = main(["--out", str(corpus), "--tasks-only", "--train", "999"])
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in _shard_files(corpus)}
    assert before == after
    assert sorted(p.name for p in (corpus / "tasks").iterdir()) == sorted(FILES)
    assert result["tasks"]["files"]["retrieval_train.json"] == 24
    assert "chance" in capsys.readouterr().out
    shutil.rmtree(corpus / "tasks")
    (corpus / "test.shards.json").unlink()
    with pytest.raises(SystemExit, match=r"test\.shards\.json not found"):
        main(["--out", str(corpus), "--tasks-only"])


def test_demo_tasks_val_split_gets_its_own_files(tmp_path: Path) -> None:
    """A corpus with a val split gets retrieval/qa/mc files for it, named demo_*val, of val clips only, with
    the training split's QA vocabulary; train and test files are those of the corpus without it."""
    from snps3_ds.demo.corpus import make_demo_corpus

    make_demo_corpus(tmp_path, train=6, test=3, val=3, seed=0, workers=1)
    summary = make_demo_tasks(tmp_path, out=tmp_path / "tasks")
    assert set(summary["files"]) == {*FILES, "retrieval_val.json", "qa_val.json", "mc_val.json"}
    splits = {name: load_annotation(tmp_path / "tasks" / f"{name}_val.json") for name in ("retrieval", "qa", "mc")}
    assert [a.split for a in splits.values()] == ["demo_val", "demo_qa_val", "demo_mc_val"]
    for annotation in splits.values():
        assert annotation.items and all(item["video"].startswith("val_") for item in annotation.items)
    train_qa = load_annotation(tmp_path / "tasks" / "qa_train.json")
    assert splits["qa"].answers == train_qa.answers
