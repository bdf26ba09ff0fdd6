"""Downstream evaluation on the tiny corpus: task texts, the QA task, retrieval / QA / multi-choice evaluation
through launch/evaluate.py, checkpoint exports, the embedding export, and 2 gloo ranks == 1 rank."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file

from snps3_ds.config import RunConfig
from snps3_ds.data.loader import build_eval_loader
from snps3_ds.downstream.annotations import Annotation, write_annotation
from snps3_ds.downstream.texts import task_texts
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.embeddings import load_embeddings
from snps3_ds.evaluation.mcqa import evaluate_mcqa
from snps3_ds.evaluation.metrics import text_video_metrics
from snps3_ds.evaluation.qa import evaluate_qa
from snps3_ds.evaluation.retrieval import RetrievalOptions, run_retrieval
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.objectives.contrastive import text_video_scores
from snps3_ds.tasks.qa import QATask, head_parameter_names

from conftest import TINY_RECIPE, tiny_overrides

from snps3_ds.run import evaluate
from snps3_ds.processes import free_port

KEYS = [f"test_{i:06d}" for i in range(8)]  # the tiny corpus's held-out sample keys
ANSWERS = ["red", "green", "blue", "left", "right"]
RETRIEVAL = Annotation("retrieval", "demo_test", [
    {"video": KEYS[0], "texts": ["a red circle moves left", "a small red circle slides left", "red circle"]},
    {"video": KEYS[1], "texts": ["a blue square rises"]},
    {"video": KEYS[2], "texts": ["a green triangle falls", "a triangle drops"]},
    {"video": KEYS[4], "texts": ["an orange diamond stays still"]},
    {"video": KEYS[5], "texts": ["a purple circle loops around", "two shapes move"]},
    {"video": KEYS[7], "texts": ["a white square on black"]},
])  # videos 3 and 6 are not in this split and must be dropped
QA = Annotation("qa", "demo_qa_test", [
    {"video": KEYS[0], "question": "what color is the circle?", "answer": "red"},
    {"video": KEYS[0], "question": "which direction does the circle move?", "answer": "left"},
    {"video": KEYS[1], "question": "what color is the square?", "answer": "magenta"},  # out of vocabulary
    {"video": KEYS[3], "question": "which direction does it move?", "answer": "right"},
    {"video": KEYS[6], "question": "what color is the shape?", "answer": "blue"},
], answers=ANSWERS)
MC = Annotation("mcqa", "demo_mc", [
    {"video": KEYS[i], "options": [f"a {c} shape moves" for c in ("red", "green", "blue", "white", "purple")],
     "answer": i % 5} for i in (0, 2, 3, 5, 6)])


def test_task_texts_per_task_train_and_eval() -> None:
    retrieval = task_texts(RETRIEVAL, train=False)
    assert retrieval(KEYS[0], ["shard caption"]) == (RETRIEVAL.items[0]["texts"], None)
    assert retrieval(KEYS[3], ["shard caption"]) is None  # not in the split: dropped before decoding
    qa_eval, qa_train = task_texts(QA, train=False), task_texts(QA, train=True)
    assert qa_eval(KEYS[0], []) == (["what color is the circle?", "which direction does the circle move?"], [0, 3])
    assert qa_eval(KEYS[1], []) == (["what color is the square?"], [-1])  # kept at test, counted wrong
    assert qa_train(KEYS[1], []) is None  # training drops out-of-vocabulary questions (here: the whole video)
    mc_eval, mc_train = task_texts(MC, train=False), task_texts(MC, train=True)
    texts, labels = mc_eval(KEYS[2], [])
    assert texts == MC.items[1]["options"] and labels == [0, 0, 1, 0, 0]
    assert mc_train(KEYS[2], []) == (["a blue shape moves"], None)  # fine-tuned as retrieval on the right option
    clone = pickle.loads(pickle.dumps(qa_eval))  # crosses into DataLoader workers
    assert clone(KEYS[6], []) == (["what color is the shape?"], [2]) and clone.texts_of(KEYS[6])[0].startswith("what")


def test_qa_task_loss_ignores_out_of_vocabulary(tiny_config: RunConfig, tokenizer) -> None:
    torch.manual_seed(0)
    task = QATask(build_model(tiny_config.model, tokenizer), len(ANSWERS))
    batch = next(iter(build_eval_loader(tiny_config.data, tokenizer, 4, 2, texts=task_texts(QA, train=False))))
    out = task(batch)
    assert torch.isfinite(out.loss) and set(out.metrics) == {"qa_acc"} and set(out.losses) == {"qa"}
    out.loss.backward()
    assert task.head[-1].weight.grad is not None and task.head[-1].weight.grad.abs().sum() > 0
    assert head_parameter_names(task) == {"head.1.weight", "head.1.bias"}
    assert {k.split(".")[0] for k in task.state_dict()} == {"model", "head"}  # saved and loaded with the task
    batch.text_labels = torch.full_like(batch.text_labels, -1)
    assert float(task(batch).loss.detach()) == 0.0  # nothing in the vocabulary: no signal, still a graph


def _evaluate_all(cfg: RunConfig, rank: int, world: int) -> dict:
    """Retrieval (rerank + exhaustive fusion), QA and MC of the same seeded untrained model."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer)
    qa = QATask(model, len(ANSWERS))
    clips = cfg.data.num_clips

    def loader(annotation: Annotation):  # batch 1: each video's computation is the same on 1 or 2 ranks
        return build_eval_loader(cfg.data, tokenizer, 1, clips, texts=task_texts(annotation, train=False))

    options = RetrievalOptions("demo_test", clips, rerank_k=3, exhaustive=True, chunk=5, worst=4)
    ctx = EvalContext(rank=rank, world_size=world)
    retrieval = run_retrieval(model, loader(RETRIEVAL), 0.05, options, ctx)
    answers = evaluate_qa(qa, loader(QA), "demo_qa_test", clips, ctx,
                          question_type=lambda video, order: "first" if order == 0 else "later")
    choices = evaluate_mcqa(model, loader(MC), 0.05, "demo_mc", clips, ctx)
    return {"metrics": {**retrieval.metrics, **answers.metrics, **choices.metrics}, "worst": retrieval.worst,
            "qa": answers.records, "mc": choices.records, "keys": retrieval.features.keys,
            "text_features": retrieval.features.text_features}


def _rank_worker(rank: int, world: int, port: int, cfg: RunConfig, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results[rank] = _evaluate_all(cfg, rank, world)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_give_the_same_metrics_as_one(tiny_config: RunConfig) -> None:
    results = mp.Manager().dict()
    mp.spawn(_rank_worker, args=(2, free_port(), tiny_config, results), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _evaluate_all(tiny_config, 0, 1)
    finally:
        torch.set_num_threads(threads)
    assert single["keys"] == [item["video"] for item in RETRIEVAL.items]  # sorted, videos 3 and 6 dropped
    metrics = single["metrics"]
    assert metrics["demo_test/num_videos"] == 6 and metrics["demo_test/num_texts"] == 10
    assert "demo_test/rerank/t2v/R@1@2clips" in metrics and "demo_test/fusion/v2t/MnR@2clips" in metrics
    assert metrics["demo_qa_test/qa/num_questions"] == 5 and "demo_qa_test/qa/acc_later@2clips" in metrics
    assert metrics["demo_mc/mc/num_questions"] == 5 and "demo_mc/mc/acc_dual@2clips" in metrics
    for rank in (0, 1):
        got = results[rank]
        assert set(got["metrics"]) == set(metrics)
        for key, value in metrics.items():
            assert got["metrics"][key] == pytest.approx(value, abs=1e-6), key
        assert got["keys"] == single["keys"] and got["qa"] == single["qa"] and got["mc"] == single["mc"]
        assert got["worst"] == single["worst"]
        torch.testing.assert_close(got["text_features"], single["text_features"], atol=1e-6, rtol=0)


def _launch(corpus: Path, *args: str) -> dict:
    out = Path(args[args.index("--out") + 1])
    evaluate.main(["--config", str(TINY_RECIPE), *args, *tiny_overrides(corpus)])
    return json.loads(out.read_text())


def test_evaluate_qa_from_a_safetensors_export(tiny_corpus: Path, tiny_config: RunConfig, tokenizer,
                                               tmp_path: Path) -> None:
    torch.manual_seed(1)  # not the launch script's seed: the weights must come from the export
    task = QATask(build_model(tiny_config.model, tokenizer), len(ANSWERS))
    torch.nn.init.normal_(task.head[-1].weight, std=5.0)  # predictions that differ between questions
    export = tmp_path / "export"
    export.mkdir()
    save_file({k: v.contiguous() for k, v in task.state_dict().items()}, str(export / "model.safetensors"))
    write_annotation(tmp_path / "qa.json", QA)
    result = _launch(tiny_corpus, "--annotation", str(tmp_path / "qa.json"), "--checkpoint", str(export),
                     "--qa-type-words", "2", "--out", str(tmp_path / "qa_out.json"))
    loader = build_eval_loader(tiny_config.data, tokenizer, 8, 2, texts=task_texts(QA, train=False))
    expected = evaluate_qa(task, loader, "demo_qa_test", 2)
    assert result["task"] == "qa" and result["records"] == expected.records
    metrics = result["metrics"]
    assert metrics["demo_qa_test/qa/acc@2clips"] == expected.metrics["demo_qa_test/qa/acc@2clips"]
    assert {"demo_qa_test/qa/acc_what color@2clips", "demo_qa_test/qa/acc_which direction@2clips"} <= set(metrics)
    assert metrics["demo_qa_test/qa/acc@2clips"] <= 80  # the out-of-vocabulary question is always wrong
    bare = {f"model.{k}": v.contiguous() for k, v in task.model.state_dict().items()}  # e.g. a retrieval export
    save_file(bare, str(tmp_path / "bare.safetensors"))
    result = _launch(tiny_corpus, "--annotation", str(tmp_path / "qa.json"), "--checkpoint",
                     str(tmp_path / "bare.safetensors"), "--out", str(tmp_path / "x.json"))
    assert result["qa_protocol"] == "zero-shot" and "demo_qa_test/qa/zs_acc@2clips" in result["metrics"]


def test_evaluate_multi_choice_smoke(tiny_corpus: Path, tmp_path: Path) -> None:
    write_annotation(tmp_path / "mc.json", MC)
    result = _launch(tiny_corpus, "--annotation", str(tmp_path / "mc.json"), "--out", str(tmp_path / "mc_out.json"))
    metrics = result["metrics"]
    assert result["task"] == "mcqa" and metrics["demo_mc/mc/num_questions"] == 5
    assert 0 <= metrics["demo_mc/mc/acc@2clips"] <= 100 and 0 <= metrics["demo_mc/mc/acc_dual@2clips"] <= 100
    assert [r["video"] for r in result["records"]] == [item["video"] for item in MC.items]


def test_evaluate_retrieval_exports_searchable_embeddings(tiny_corpus: Path, tmp_path: Path) -> None:
    write_annotation(tmp_path / "ret.json", RETRIEVAL)
    result = _launch(tiny_corpus, "--annotation", str(tmp_path / "ret.json"), "--rerank", "2", "--worst", "3",
                     "--export-embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "ret_out.json"))
    tensors, index = load_embeddings(tmp_path / "emb")
    assert index["videos"] == [item["video"] for item in RETRIEVAL.items]
    assert [t["text"] for t in index["texts"]] == [t for item in RETRIEVAL.items for t in item["texts"]]
    assert tensors["text"].shape == (10, 32) and tensors["video"].shape == (6, 32)
    torch.testing.assert_close(tensors["video"].norm(dim=-1), torch.ones(6))
    # the exported clips reproduce the evaluation's own similarity, hence its metrics
    scores = text_video_scores(tensors["text"], tensors["video_clips"], tensors["clip_mask"].bool(),
                               index["temperature"])
    recomputed = text_video_metrics(scores, tensors["text_video"])
    for name in ("t2v/R@1", "t2v/MnR", "v2t/R@5", "v2t/MdR"):
        assert result["metrics"][f"demo_test/{name}@2clips"] == pytest.approx(recomputed[name])
    worst = result["worst"]
    assert len(worst) == 3 and worst[0]["similarity"] == "rerank" and worst[0]["rank"] >= worst[-1]["rank"]
    assert worst[0]["text"] in {t for item in RETRIEVAL.items for t in item["texts"]}


def test_worst_queries_table_goes_to_an_active_wandb_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from snps3_ds.evaluation import report

    logged = []

    class FakeTable:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    class FakeRun:
        def log(self, row, step=None):
            logged.append(row)

    fake = type(sys)("wandb")
    fake.Table, fake.run = FakeTable, None
    monkeypatch.setitem(sys.modules, "wandb", fake)
    rows = [{"text": "a red circle", "video": KEYS[0], "rank": 5, "top1": KEYS[1]}]
    assert not report.log_table("demo_test/worst_queries", rows)  # wandb imported, no run: nothing logged
    fake.run = FakeRun()
    assert report.log_table("demo_test/worst_queries", rows)
    table = logged[0]["demo_test/worst_queries"]
    assert table.columns == ["text", "video", "rank", "top1"] and table.data == [["a red circle", KEYS[0], 5, KEYS[1]]]
