"""The training system's promises, each with real DeepSpeed processes on 2 CPU ranks:
exact resume after SIGTERM, a NaN on one rank skipped by all, and two launcher "nodes" on one machine."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_RECIPE, tiny_overrides
from launching import DEEPSPEED, deepspeed_cmd, free_port, launch_env, read_jsonl, run_ok

TINY_DS = "ds_configs/tiny_fp32.json"  # fp32: the resume comparison is at 1e-6


def _pretrain_args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["--config", str(TINY_RECIPE), "--ds_config", TINY_DS, *tiny_overrides(corpus, run_dir),
            "train.trace_samples=true", "data.num_workers=1", *extra]


def _trace(run_dir: Path, rank: int) -> dict[tuple[int, int], dict]:
    """(step, micro) -> the last row written for it (a resumed run rewrites the steps after its checkpoint)."""
    return {(r["step"], r["micro"]): r for r in read_jsonl(run_dir / "trace" / f"rank_{rank:05d}.jsonl")}


def _wait_for_step(trace: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if trace.is_file() and any(r["step"] >= step for r in read_jsonl(trace)):
            return
        assert proc.poll() is None, f"training ended before step {step}:\n{proc.stdout.read()[-4000:]}"
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached in {timeout} s")


def _wait_gone(group: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(group, signal.SIGKILL)
    raise TimeoutError("the stopped run did not exit")


@pytest.mark.slow
def test_resume_after_sigterm_continues_the_same_samples_and_losses(tiny_corpus: Path, tmp_path: Path) -> None:
    total, stop_after = 14, 5
    steps = f"train.max_steps={total}"
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_ok(deepspeed_cmd(2, "launch/pretrain.py", *_pretrain_args(tiny_corpus, straight, steps)))

    # The preempted run: SIGTERM to the whole process group, as a scheduler does, once step N was traced.
    proc = subprocess.Popen(deepspeed_cmd(2, "launch/pretrain.py", *_pretrain_args(tiny_corpus, stopped, steps)),
                            cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    _wait_for_step(stopped / "trace" / "rank_00000.jsonl", stop_after, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    _wait_gone(proc.pid)
    completes = sorted((stopped / "checkpoints").glob("step_*/COMPLETE"))
    assert completes, f"no complete checkpoint after SIGTERM:\n{log[-4000:]}"
    saved = int(completes[-1].parent.name.removeprefix("step_"))
    assert stop_after <= saved < total, log[-3000:]
    assert "received SIGTERM" in log and "stopped by SIGTERM" in log

    out = run_ok(deepspeed_cmd(2, "launch/pretrain.py", *_pretrain_args(tiny_corpus, stopped, steps, ),
                               "--resume", "auto"))
    assert f"resuming from {stopped / 'checkpoints' / completes[-1].parent.name}: step {saved}" in out
    for rank in (0, 1):
        want, got = _trace(straight, rank), _trace(stopped, rank)
        later = sorted(k for k in want if k[0] > saved)
        assert later and [k for k in sorted(got) if k[0] > saved] == later
        for key in later:
            assert got[key]["keys"] == want[key]["keys"], (rank, key)
            assert abs(got[key]["loss"] - want[key]["loss"]) <= 1e-6, (rank, key, got[key]["loss"], want[key]["loss"])


@pytest.mark.slow
def test_nonfinite_loss_on_one_rank_is_skipped_by_all(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = run_ok(deepspeed_cmd(2, "launch/pretrain.py", *_pretrain_args(
        tiny_corpus, run_dir, "train.max_steps=4", "train.inject_nonfinite_step=2", "train.inject_nonfinite_rank=1")))
    assert "step 2: skipping a micro-batch on all ranks: rank 1: contrastive non-finite on samples" in out
    for rank in (0, 1):
        rows = read_jsonl(run_dir / "trace" / f"rank_{rank:05d}.jsonl")
        assert [(r["step"], r["micro"], r["skipped"]) for r in rows] == [
            (1, 0, False), (2, 0, True), (2, 1, False), (3, 0, False), (4, 0, False)], rank
    last = read_jsonl(run_dir / "metrics.jsonl")[-1]
    assert last["step"] == 4 and last["train/nonfinite_skipped"] == 1 and last["train/loss"] == last["train/loss"]
    assert "parameters and BatchNorm statistics identical on all 2 ranks" in out


@pytest.mark.slow
def test_multinode_two_launchers_on_one_machine_train_together(tiny_corpus: Path, tmp_path: Path) -> None:
    """Two `deepspeed --no_ssh --node_rank i` launchers (one rank each) form one world through 127.0.0.1."""
    hosts = tmp_path / "hosts"
    hosts.write_text("node-0 slots=1\nnode-1 slots=1\n")
    port, run_dir = free_port(), tmp_path / "run"
    env = launch_env(OMP_NUM_THREADS="1")
    nodes = [subprocess.Popen([DEEPSPEED, "--hostfile", str(hosts), "--no_ssh", "--node_rank", str(node),
                               "--master_addr", "127.0.0.1", "--master_port", str(port), "launch/pretrain.py",
                               *_pretrain_args(tiny_corpus, run_dir, "train.max_steps=3")],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for node in (0, 1)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "x world 2 = global batch 8" in logs[0]
    assert "parameters and BatchNorm statistics identical on all 2 ranks" in logs[0]
    tag = run_dir / "checkpoints" / "step_00000003"
    assert (tag / "COMPLETE").is_file() and (tag / "rank_00000.pt").is_file() and (tag / "rank_00001.pt").is_file()
    keys = [{k for r in read_jsonl(run_dir / "trace" / f"rank_{rank:05d}.jsonl") for k in r["keys"]} for rank in (0, 1)]
    assert not keys[0] & keys[1], "within the epoch the two nodes read different samples"


def test_validation_during_pretraining_logs_val_rows(tiny_corpus: Path, tmp_path: Path) -> None:

    from snps3_ds.run import pretrain

    run_dir = tmp_path / "run"
    pretrain.main(["--engine", "torch", *_pretrain_args(tiny_corpus, run_dir, "train.max_steps=3",
                                                        "train.eval_every=2", "data.num_workers=0")])
    rows = read_jsonl(run_dir / "metrics.jsonl")
    val_steps = [r["step"] for r in rows if "val/t2v/R@1@2clips" in r]
    assert val_steps == [2, 3], val_steps  # every 2 steps, then the final evaluation
    assert (run_dir / "eval_final.json").is_file()
    with pytest.raises(Exception, match="already holds checkpoints"):
        pretrain.main(["--engine", "torch", *_pretrain_args(tiny_corpus, run_dir, "train.max_steps=3")])


@pytest.mark.slow
@pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                    reason="DeepSpeed refuses fp16 on the CPU ('Type fp16 is not supported on your device'); "
                           "ds_configs/zero2_fp16.json runs on CUDA GPUs")
def test_fp16_dynamic_loss_scaling_trains_on_gpu(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = run_ok(deepspeed_cmd(1, "launch/pretrain.py", "--config", str(TINY_RECIPE), "--ds_config",
                               "ds_configs/zero2_fp16.json", *tiny_overrides(tiny_corpus, run_dir),
                               "train.micro_batch_size=16", "train.max_steps=4"))
    assert "fp16, ZeRO stage 2" in out
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert all(r["train/loss_scale"] > 0 for r in rows) and rows[-1]["train/loss"] == rows[-1]["train/loss"]
