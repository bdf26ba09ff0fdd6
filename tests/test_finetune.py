"""Fine-tuning on the demo tasks (built from a tiny corpus): retrieval, open-ended QA and multi-choice through
launch/finetune.py — the pre-training trainer, engines, checkpoints and logging with a task + recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, TINY_RECIPE, tiny_overrides
from launching import deepspeed_cmd, run_ok
from snps3_ds.config import ConfigError

from snps3_ds.run import finetune, pretrain

TINY_DS = str(REPO / "ds_configs" / "tiny_fp32.json")


@pytest.fixture(scope="module")
def pretrained(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step tiny pre-training and the demo task files of the tiny corpus."""
    from snps3_ds.demo.tasks import make_demo_tasks

    if not (tiny_corpus / "tasks" / "qa_train.json").is_file():
        make_demo_tasks(tiny_corpus)
    run_dir = tmp_path_factory.mktemp("pretrained")
    pretrain.main(["--engine", "torch", "--config", str(TINY_RECIPE), "--ds_config", TINY_DS,
                   *tiny_overrides(tiny_corpus, run_dir)])
    return run_dir / "checkpoints"


def _task_args(corpus: Path, run_dir: Path, kind: str, train: str, evals: list[str], *extra: str) -> list[str]:
    tasks = corpus / "tasks"
    return ["--config", str(TINY_RECIPE), "--ds_config", TINY_DS, *tiny_overrides(corpus, run_dir),
            f"task.kind={kind}", f"task.train_annotation={tasks / train}",
            f"task.eval_annotations=[{','.join(str(tasks / e) for e in evals)}]", "masking.probability=0.0",
            "objectives.mlm=0", "objectives.level2=1", *extra]


def test_finetune_retrieval_evaluates_with_split_and_clip_names(tiny_corpus: Path, pretrained: Path,
                                                                 tmp_path: Path) -> None:
    """Also the joint weight: chosen on the tuning annotations (here the test files themselves: the tiny corpus
    has no val split, and this checks the plumbing), reported for the eval annotations, and reproduced by
    launch/evaluate.py --joint-weight from the checkpoint."""
    from snps3_ds.evaluation.joint_weight import WEIGHTS
    from snps3_ds.run import evaluate

    run_dir, tasks = tmp_path / "ret", tiny_corpus / "tasks"
    finetune.main(["--engine", "torch", "--init", str(pretrained), *_task_args(
        tiny_corpus, run_dir, "retrieval", "retrieval_train.json", ["retrieval_test.json", "mc_test.json"],
        "task.rerank_k=3",
        f"task.joint_weight_annotations=[{tasks / 'retrieval_test.json'},{tasks / 'mc_test.json'}]")])
    final = json.loads((run_dir / "eval_final.json").read_text())
    for key in ("val/demo_test/t2v/R@1@2clips", "val/demo_test/v2t/MdR@2clips", "val/demo_test/rerank/t2v/R@1@2clips",
                "val/demo_mc_test/mc/acc@2clips", "val/demo_mc_test/mc/acc_dual@2clips"):
        assert key in final, sorted(final)
    assert final["val/demo_test/num_videos"] == 8
    assert (run_dir / "checkpoints" / "step_00000003" / "COMPLETE").is_file()
    weights = {task: final[f"val/{split}/joint_weight/chosen"] for task, split in
               (("retrieval", "demo_test"), ("mcqa", "demo_mc_test"))}
    assert set(weights.values()) <= set(WEIGHTS)
    assert final["val/demo_test/rerank_weighted/weight"] == weights["retrieval"]
    assert final["val/demo_mc_test/mc/weight"] == weights["mcqa"]
    # chosen on this very split, so no weight of the grid does better than the one reported (the plain sum is w = 1)
    assert final["val/demo_test/rerank_weighted/t2v/R@1@2clips"] >= final["val/demo_test/rerank_joint/t2v/R@1@2clips"]
    assert final["val/demo_mc_test/mc/acc_weighted@2clips"] >= final["val/demo_mc_test/mc/acc_joint@2clips"]
    common = ["--config", str(TINY_RECIPE), *tiny_overrides(tiny_corpus), "--checkpoint", str(run_dir / "checkpoints")]
    again = evaluate.main([*common, "--annotation", str(tasks / "retrieval_test.json"), "--rerank", "3",
                           "--joint-weight", str(weights["retrieval"])])
    mc = evaluate.main([*common, "--annotation", str(tasks / "mc_test.json"), "--joint-weight", str(weights["mcqa"])])
    for key in ("rerank_weighted/t2v/R@1@2clips", "rerank_weighted/v2t/MnR@2clips", "rerank_joint/t2v/MnR@2clips"):
        assert again[f"demo_test/{key}"] == final[f"val/demo_test/{key}"], key
    assert mc["demo_mc_test/mc/acc_weighted@2clips"] == final["val/demo_mc_test/mc/acc_weighted@2clips"]


def test_finetune_qa_trains_head_and_model_and_evaluates_the_same_from_its_checkpoint(
        tiny_corpus: Path, pretrained: Path, tmp_path: Path) -> None:
    from snps3_ds.engine.weights import read_task_state
    from snps3_ds.run import evaluate

    run_dir = tmp_path / "qa"
    finetune.main(["--engine", "torch", "--task", "qa", "--init", str(pretrained), *_task_args(
        tiny_corpus, run_dir, "qa", "qa_train.json", ["qa_test.json"], "train.max_steps=4", "optim.head_lr=1e-2")])
    before, after = read_task_state(pretrained), read_task_state(run_dir / "checkpoints")
    assert any(k.startswith("head.") for k in after), "the answer head is saved with the task"
    moved = [k for k in before if k.startswith("model.bert.") and not (before[k].float() == after[k]).all()]
    assert moved, "fine-tuning updates the shared BERT, not only the head"
    final = json.loads((run_dir / "eval_final.json").read_text())
    assert {"val/demo_qa_test/qa/acc@2clips", "val/demo_qa_test/qa/acc_color@2clips"} <= set(final)
    again = evaluate.main(["--config", str(TINY_RECIPE), *tiny_overrides(tiny_corpus), "--annotation",
                           str(tiny_corpus / "tasks" / "qa_test.json"), "--checkpoint", str(run_dir / "checkpoints"),
                           "--out", str(tmp_path / "qa.json")])
    assert again["demo_qa_test/qa/acc@2clips"] == final["val/demo_qa_test/qa/acc@2clips"]


def test_finetune_refuses_mismatched_task_and_annotation(tiny_corpus: Path, pretrained: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a qa annotation cannot train retrieval"):
        finetune.main(["--engine", "torch", *_task_args(tiny_corpus, tmp_path / "x", "retrieval", "qa_train.json", [])])
    with pytest.raises(ConfigError, match="open-ended QA evaluation needs --task qa"):
        finetune.main(["--engine", "torch", *_task_args(tiny_corpus, tmp_path / "y", "retrieval",
                                                        "retrieval_train.json", ["qa_test.json"])])
    def tuned_on(name: str, run: str) -> list[str]:
        return ["--engine", "torch", *_task_args(tiny_corpus, tmp_path / run, "retrieval", "retrieval_train.json", [],
                                                 f"task.joint_weight_annotations=[{tiny_corpus / 'tasks' / name}]")]
    with pytest.raises(ConfigError, match="joint_weight_annotations: .*qa_test.json is a 'qa' annotation"):
        finetune.main(tuned_on("qa_test.json", "z"))
    with pytest.raises(ConfigError, match="re-ranking weight needs task.rerank_k > 0"):
        finetune.main(tuned_on("retrieval_test.json", "w"))


@pytest.mark.slow
def test_finetune_mcqa_with_deepspeed_on_two_ranks(tiny_corpus: Path, pretrained: Path, tmp_path: Path) -> None:
    """Also: the figures the 2-rank run reports are the ones its checkpoint gives in one process. Each rank's
    BatchNorm statistics follow its own batches; without their mean at evaluation and at saving, rank 1 scored
    its half of the held-out set with its own and the checkpoint kept rank 0's."""
    from snps3_ds.run import evaluate

    run_dir = tmp_path / "mc"
    out = run_ok(deepspeed_cmd(2, "launch/finetune.py", "--init", str(pretrained), *_task_args(
        tiny_corpus, run_dir, "mcqa", "mc_train.json", ["mc_test.json", "retrieval_test.json"], "train.max_steps=2")))
    assert "x world 2" in out and "parameters and BatchNorm statistics identical on all 2 ranks" in out
    final = json.loads((run_dir / "eval_final.json").read_text())
    assert final["val/demo_mc_test/mc/num_questions"] == 8
    again = evaluate.main(["--config", str(TINY_RECIPE), *tiny_overrides(tiny_corpus), "--annotation",
                           str(tiny_corpus / "tasks" / "retrieval_test.json"), "--checkpoint",
                           str(run_dir / "checkpoints"), "--out", str(tmp_path / "ret.json")])
    reported = {k.removeprefix("val/"): v for k, v in final.items() if k.startswith("val/demo_test/")}
    assert "demo_test/t2v/MnR@2clips" in reported, sorted(final)
    assert {k: again[k] for k in reported} == pytest.approx(reported, abs=1e-4)
