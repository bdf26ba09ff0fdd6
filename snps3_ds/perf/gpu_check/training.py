"""Training measurements through the real flow: `launch/pretrain.py` in a subprocess, one process (a DeepSpeed
world of one), reading the run's metrics.jsonl for step time, samples/s, data-wait fraction, peak memory and
MFU (snps3_ds.perf.flops against the device's dense bf16 peak), and a run stopped by SIGTERM and resumed.

Why subprocesses: each run needs a fresh CUDA context and memory high-water mark, a crash (out of memory)
must not end the check, and the flow measured is exactly the one users start.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snps3_ds.perf.gpu_check.decode import CheckFailed

REPO = Path(__file__).resolve().parents[3]
PRETRAIN = REPO / "launch" / "pretrain.py"
BERT_BASE = ("{hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072, "
             "vocab_size: 30522, max_position_embeddings: 512}")


@dataclass
class TrainSpec:
    """One measured run: recipe, ds_config (precision), micro-batch, shards and where it writes."""

    recipe: str
    ds_config: str
    micro: int
    steps: int
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    log_every: int = 5
    timeout_s: float = 240


def _ds_config(spec: TrainSpec) -> Path:
    """The ds_config with this run's micro-batch (the recipe's batch may not fit, or may leave the GPU idle)."""
    raw = json.loads(Path(spec.ds_config).read_text())
    raw["train_micro_batch_size_per_gpu"] = spec.micro
    raw["gradient_accumulation_steps"] = 1
    path = spec.run_dir.parent / f"{spec.run_dir.name}.ds_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw, indent=1))
    return path


def command(spec: TrainSpec, *extra: str) -> list[str]:
    return [sys.executable, str(PRETRAIN), "--config", spec.recipe, "--ds_config", str(_ds_config(spec)),
            *extra, *spec.overrides, f"train.micro_batch_size={spec.micro}", f"train.global_batch_size={spec.micro}",
            f"train.max_steps={spec.steps}", f"train.log_every={spec.log_every}", f"train.run_dir={spec.run_dir}",
            "train.eval_every=0"]


def environment() -> dict[str, str]:
    """The check's own environment (PYTHONPATH with the carried packages), quiet W&B, unbuffered output."""
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w")
    return subprocess.Popen(cmd, cwd=REPO, env=environment(), stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path, timeout_s: float) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise CheckFailed(f"still running after {timeout_s:.0f} s; log {log}: {_tail(log)}") from None


def _tail(log: Path, lines: int = 3) -> str:
    text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in text if "Error" in line or "error:" in line]
    return " | ".join((errors or text)[-lines:])[-600:]


def _rows(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Medians over the logged windows after the first (which holds start-up and compilation)."""
    timed = rows[1:] or rows
    figures: dict[str, Any] = {"windows": len(timed), "steps": int(rows[-1].get("step", 0)) if rows else 0}
    for key in ("perf/step_time_s", "perf/samples_per_s", "perf/data_wait_frac", "perf/tflops_per_device",
                "perf/mfu"):
        values = [row[key] for row in timed if key in row]
        if values:
            figures[key.split("/")[1]] = statistics.median(values)
    for key in ("system/gpu_mem_peak_gb", "system/gpu_mem_reserved_gb", "system/cpu_rss_gb"):
        values = [row[key] for row in rows if key in row]
        if values:
            figures[key.split("/")[1]] = max(values)
    last = rows[-1] if rows else {}
    for key in ("train/loss", "train/loss_scale", "train/overflow_steps", "train/grad_norm"):
        if key in last:
            figures[key.split("/")[1]] = last[key]
    return figures


def measure(spec: TrainSpec) -> dict[str, Any]:
    """One run to the end; its figures, or CheckFailed with the log's last error."""
    log = spec.run_dir.parent / f"{spec.run_dir.name}.log"
    began = time.perf_counter()
    code = _finish(_start(command(spec), log), log, spec.timeout_s)
    rows = _rows(spec.run_dir)
    if code != 0 or not rows:
        raise CheckFailed(f"exit code {code}; log {log}: {_tail(log)}")
    figures = summarise(rows)
    figures.update(micro_batch=spec.micro, wall_s=time.perf_counter() - began, strategy=_strategy(log))
    loss = figures.get("loss")
    if loss is None or loss != loss or abs(loss) == float("inf"):
        raise CheckFailed(f"the loss is not finite: {figures}")
    return figures


def _strategy(log: Path) -> str:
    return next((line for line in log.read_text(errors="replace").splitlines() if line.startswith("training ")), "")


def _wait_for_step(trace: Path, step: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if trace.is_file() and any(json.loads(line)["step"] >= step for line in trace.read_text().splitlines()
                                   if line.strip()):
            return
        time.sleep(0.5)
    raise CheckFailed(f"step {step} was not reached (exit code {proc.poll()})")


def stop_and_resume(spec: TrainSpec, stop_after: int) -> dict[str, Any]:
    """SIGTERM the run after `stop_after` steps (as a scheduler would), then `--resume auto` to the end."""
    spec.overrides = [*spec.overrides, "train.trace_samples=true"]
    log = spec.run_dir.parent / f"{spec.run_dir.name}.stopped.log"
    proc = _start(command(spec), log)
    _wait_for_step(spec.run_dir / "trace" / "rank_00000.jsonl", stop_after, proc, spec.timeout_s)
    os.killpg(proc.pid, signal.SIGTERM)
    code = _finish(proc, log, 120)
    complete = sorted((spec.run_dir / "checkpoints").glob("step_*/COMPLETE"))
    if code != 128 + signal.SIGTERM or not complete:
        raise CheckFailed(f"after SIGTERM: exit code {code} (expected {128 + signal.SIGTERM}), complete checkpoints "
                          f"{[c.parent.name for c in complete]}; log {log}: {_tail(log)}")
    saved = int(complete[-1].parent.name.removeprefix("step_"))
    resumed_log = spec.run_dir.parent / f"{spec.run_dir.name}.resumed.log"
    code = _finish(_start(command(spec, "--resume", "auto"), resumed_log), resumed_log, spec.timeout_s)
    text = resumed_log.read_text(errors="replace")
    if code != 0 or f"resuming from {spec.run_dir / 'checkpoints' / complete[-1].parent.name}" not in text:
        raise CheckFailed(f"resume: exit code {code}; log {resumed_log}: {_tail(resumed_log)}")
    rows = _rows(spec.run_dir)
    return {"stopped_at_step": saved, "exit_code_after_sigterm": 128 + signal.SIGTERM, "resumed_to_step": spec.steps,
            "final_loss": rows[-1].get("train/loss") if rows else None,
            "dali_resume_note": "DALI's reader cannot seek: the resumed order is reseeded, not replayed"}
