"""End to end on a tiny generated corpus: train a few steps -> checkpoint -> evaluate, with the real launch
scripts; DeepSpeed ZeRO-2 on 2 CPU ranks through the `deepspeed` launcher; bad input named up front."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from snps3_ds.config import ConfigError
from snps3_ds.data.stream.shards import ShardSpecError

from conftest import REPO, TINY_RECIPE, tiny_overrides
from launching import free_port, run_ok as _run

from snps3_ds.run import evaluate, pretrain

TINY_DS = REPO / "ds_configs" / "tiny_fp32.json"


def _metrics_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _evaluate(corpus: Path, checkpoint: Path, out: Path) -> dict:
    evaluate.main(["--config", str(TINY_RECIPE), "--checkpoint", str(checkpoint), "--out", str(out),
                   *tiny_overrides(corpus)])
    return json.loads(out.read_text())["metrics"]


def test_end_to_end_torch_engine_train_checkpoint_evaluate(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pretrain.main(["--engine", "torch", "--config", str(TINY_RECIPE), "--ds_config", str(TINY_DS),
                   *tiny_overrides(tiny_corpus, run_dir), "masking.attentive_probability=0.5"])
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_00000003"
    rows = _metrics_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["train/loss"] > 0 for r in rows)
    metrics = _evaluate(tiny_corpus, run_dir / "checkpoints", tmp_path / "eval.json")
    assert metrics["num_videos"] == 8 and metrics["num_texts"] == 16
    for key in ("t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MdR", "t2v/MnR", "v2t/R@1", "v2t/MdR", "v2t/MnR"):
        assert key in metrics
    assert 1 <= metrics["t2v/MdR"] <= 8 and metrics["t2v/R@10"] == 100  # 8 videos: every rank <= 10


@pytest.mark.slow
def test_end_to_end_plain_python_deepspeed_process(tiny_corpus: Path, tmp_path: Path) -> None:
    """One `python launch/pretrain.py` process uses the DeepSpeed engine as a world of one."""
    run_dir = tmp_path / "run"
    out = _run([sys.executable, "launch/pretrain.py", "--config", str(TINY_RECIPE), "--ds_config", str(TINY_DS),
                *tiny_overrides(tiny_corpus, run_dir), "train.max_steps=2"])
    assert "world 1" in out and "engine deepspeed" in out
    assert (run_dir / "checkpoints" / "step_00000002" / "mp_rank_00_model_states.pt").is_file()


@pytest.mark.slow
def test_end_to_end_deepspeed_zero2_two_cpu_ranks(tiny_corpus: Path, tmp_path: Path) -> None:
    """The shipped bf16 ZeRO-2 config under `deepspeed --num_gpus 2`: both ranks train, each writes its
    optimizer partition, and evaluation reads the consolidated fp32 weights back."""
    run_dir = tmp_path / "run"
    deepspeed = str(Path(sys.executable).parent / "deepspeed")
    port = free_port()
    out = _run([deepspeed, "--num_gpus", "2", "--master_port", str(port), "launch/pretrain.py",
                "--config", str(TINY_RECIPE), "--ds_config", "ds_configs/zero2.json",
                *tiny_overrides(tiny_corpus, run_dir), "train.micro_batch_size=16", "train.max_steps=3"])
    assert "micro 16 x accumulation 1 x world 2 = global batch 32, bf16, ZeRO stage 2" in out
    left = list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert not left, f"DeepSpeed's CPU all-reduce buffers outlived the run: {left}"
    tag = run_dir / "checkpoints" / "step_00000003"
    partitions = sorted(p.name for p in tag.glob("*optim_states.pt"))
    assert len(partitions) == 2 and all("zero_pp_rank" in p for p in partitions), partitions
    rows = _metrics_rows(run_dir)
    assert rows[-1]["step"] == 3 and rows[-1]["perf/samples_per_s"] > 0
    metrics = _evaluate(tiny_corpus, run_dir / "checkpoints", tmp_path / "eval.json")
    assert metrics["num_videos"] == 8


def test_end_to_end_bad_input_is_named(tiny_corpus: Path, tmp_path: Path) -> None:
    base = ["--engine", "torch", "--config", str(TINY_RECIPE), "--ds_config", str(TINY_DS)]
    with pytest.raises(ConfigError, match=r"tiny_fp32\.json: train_micro_batch_size_per_gpu is 4 .* is 16"):
        pretrain.main([*base, *tiny_overrides(tiny_corpus, tmp_path), "train.micro_batch_size=16"])
    with pytest.raises(ShardSpecError, match="no/such/shards"):
        pretrain.main([*base, *tiny_overrides(tiny_corpus, tmp_path), f"data.train_shards=[{tmp_path}/no/such/shards]"])
    with pytest.raises(ConfigError, match=r"unknown key 'train\.max_step'"):
        pretrain.main([*base, "train.max_step=3"])
