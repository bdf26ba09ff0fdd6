"""Starting the real launch scripts from tests: the deepspeed launcher, free ports, a quiet environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from snps3_ds.processes import free_port

DEEPSPEED = str(Path(sys.executable).parent / "deepspeed")


def launch_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **extra}


def run_ok(cmd: list[str], timeout: int = 600, **env: str) -> str:
    """Run a command from the repository root; fail the test with its output tails when it fails."""
    done = subprocess.run(cmd, cwd=REPO, env=launch_env(**env), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def deepspeed_cmd(ranks: int, script: str, *args: str) -> list[str]:
    return [DEEPSPEED, "--num_gpus", str(ranks), "--master_port", str(free_port()), script, *args]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
