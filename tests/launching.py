"""Starting the real launch scripts from tests: the deepspeed launcher, free ports, a quiet environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from snps3_ds.processes import free_port

DEEPSPEED = str(Path(sys.executable).parent / "deepspeed")


def launch_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **extra}


def run_ok(cmd: list[str], timeout: int = 600, **env: str) -> str:
    """Run a command from the repository root; fail the test with its output tails when it fails. It runs in
    a session of its own, killed whole on a timeout, so no rank outlives the test."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=launch_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout} s:\n{out[-3000:]}\n{err[-5000:]}") from None
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-3000:]}\n{err[-5000:]}"
    return out


def deepspeed_cmd(ranks: int, script: str, *args: str) -> list[str]:
    return [DEEPSPEED, "--num_gpus", str(ranks), "--master_port", str(free_port()), script, *args]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


TINY_DS = "ds_configs/tiny_fp32.json"  # fp32 ZeRO-2, micro 4: resume comparisons at 1e-6


def pretrain_args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    """launch/pretrain.py arguments for a traced tiny run on the test corpus."""
    from conftest import TINY_RECIPE, tiny_overrides

    return ["--config", str(TINY_RECIPE), "--ds_config", TINY_DS, *tiny_overrides(corpus, run_dir),
            "train.trace_samples=true", "data.num_workers=1", *extra]


def trace_rows(run_dir: Path, rank: int) -> dict[tuple[int, int], dict]:
    """(step, micro) -> the last row written for it (a resumed run rewrites the steps after its checkpoint)."""
    path = Path(run_dir) / "trace" / f"rank_{rank:05d}.jsonl"
    return {(r["step"], r["micro"]): r for r in read_jsonl(path)} if path.is_file() else {}


def global_batches(run_dir: Path, worlds: dict[int, int]) -> dict[int, list[str]]:
    """step -> the sample keys of its global batch, in global order, for steps run on `worlds[step]` ranks:
    micro-batch m of rank r is the step's micro-batch m x world + r (snps3_ds.data.stream.reader)."""
    rows = {rank: trace_rows(run_dir, rank) for rank in range(max(worlds.values()))}
    out = {}
    for step, world in sorted(worlds.items()):
        micros = sorted(m for s, m in rows[0] if s == step and not rows[0][(s, m)]["skipped"])
        out[step] = [k for m in micros for r in range(world) for k in rows[r][(step, m)]["keys"]]
    return out
