"""The training loop. It knows engines, batches and TaskOutputs; nothing of the method's internals.

Per optimiser step (snps3_ds.engine.steps): its micro-batches, each fetch -> forward -> (all ranks agree:
any non-finite loss? any stop signal?) -> backward -> step, in two passes for a task that plans its steps.
A non-finite loss anywhere makes every rank skip it; a stop signal (SIGTERM/SIGINT) makes every rank finish
the optimiser step in flight, save, and return.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from snps3_ds.config import TrainConfig
from snps3_ds.data.batch import BatchStream, VideoTextBatch
from snps3_ds.distributed import average_batch_norm_stats, gather_objects
from snps3_ds.engine import rng
from snps3_ds.engine.base import Engine, mean_over_ranks
from snps3_ds.engine.faults import StopSignal
from snps3_ds.engine.steps import StepRequest, optimiser_step
from snps3_ds.engine.run_checkpoints import mark_complete, prune, tag_for, write_rank_state
from snps3_ds.engine.state import TrainState
from snps3_ds.engine.system_stats import system_stats
from snps3_ds.logging import RunLogger
from snps3_ds.tasks.base import TaskOutput


@dataclass
class TrainHooks:
    """Optional extras the launch script wires in; the loop only calls them."""

    evaluate: Callable[[int], dict[str, float]] | None = None  # collective; returns val/ metrics
    flops_per_sample: float | None = None  # training FLOPs of one sample (forward + backward), for MFU
    peak_flops: float | None = None  # per device
    trace_dir: Path | None = None  # per-step sample keys and losses per rank (audits, exact-resume tests)


@dataclass
class TrainResult:
    state: TrainState
    stopped_by: str | None = None  # the signal's name when a stop signal ended the run early


@dataclass
class _Window:
    """What is averaged between two log rows."""

    # Detached tensors, turned into floats only when a row is logged: no host sync per term per step.
    sums: dict[str, torch.Tensor | float] = field(default_factory=lambda: defaultdict(float))
    counted: int = 0
    waited: float = 0.0
    steps: int = 0
    start: float = field(default_factory=time.perf_counter)


def train(engine: Engine, batches: BatchStream, cfg: TrainConfig, logger: RunLogger,
          save_dir: Path, client_state: dict[str, Any], start: TrainState | None = None,
          hooks: TrainHooks | None = None) -> TrainResult:
    """Run optimiser steps until cfg.max_steps (counting from `start` when resuming); save every
    cfg.checkpoint_every steps, at the end, and when a stop signal arrives."""
    state, hooks = start or TrainState(), hooks or TrainHooks()
    if state.step >= cfg.max_steps:  # resuming a run that already finished: nothing to train or save
        return TrainResult(state)
    stop, window = StopSignal(), _Window()
    trace = _open_trace(hooks.trace_dir, engine.rank)
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc="train", unit="step", mininterval=2.0,
               disable=engine.rank != 0, file=sys.stderr, dynamic_ncols=True)
    try:
        while state.step < cfg.max_steps:
            stop_now = _one_step(engine, batches, cfg, state, window, stop, trace)
            bar.update(1)
            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps or stop_now:
                logger.log(state.step, _row(engine, batches, state, window, hooks))
                window = _Window()
            if hooks.evaluate and cfg.eval_every and state.step % cfg.eval_every == 0 and not stop_now:
                logger.log(state.step, hooks.evaluate(state.step))
            if stop_now:
                save(engine, save_dir, state, client_state, batches, cfg.keep_checkpoints)
                return TrainResult(state, _signal_name(stop.received))
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.step < cfg.max_steps:
                save(engine, save_dir, state, client_state, batches, cfg.keep_checkpoints)
        save(engine, save_dir, state, client_state, batches, cfg.keep_checkpoints)
        return TrainResult(state)
    finally:
        bar.close()
        stop.close()
        if trace is not None:
            trace.close()


def _one_step(engine: Engine, batches: BatchStream, cfg: TrainConfig, state: TrainState,
              window: _Window, stop: StopSignal, trace) -> bool:
    """One optimiser step (snps3_ds.engine.steps; a planned step skipped whole for a non-finite loss is
    retried with the next micro-batches); returns whether all ranks agreed to stop."""
    while True:
        request = StepRequest(engine, lambda: next(batches), cfg.seed, state.step + 1,
                              lambda: stop.received is not None, _drill(cfg, state, engine.rank),
                              _tracer(trace, state.step + 1))
        outcome = optimiser_step(request)
        window.waited += outcome.waited
        for bad, batch in outcome.skipped:
            _report_nonfinite(engine, state, bad, batch)
        for out in outcome.outputs:
            for name, value in {"loss": out.loss, **out.losses, **out.metrics}.items():
                window.sums[name] = window.sums[name] + value.detach().float()
            window.counted += 1
        if outcome.stepped or outcome.stop:
            break
    if outcome.stepped:
        state.step += 1
        state.samples += engine.micro_batch_size * engine.grad_accum * engine.world_size
        window.steps += 1
    return outcome.stop


def _drill(cfg: TrainConfig, state: TrainState, rank: int):
    """The fault drill: the first micro-batch of step train.inject_nonfinite_step on one rank turns NaN."""
    def poison(micro: int, out: TaskOutput) -> TaskOutput:
        if cfg.inject_nonfinite_step == state.step + 1 and micro == 0 and rank == cfg.inject_nonfinite_rank:
            return _poisoned(out)  # the same path a real NaN takes
        return out
    return poison


def _tracer(trace, step: int):
    if trace is None:
        return None
    return lambda micro, batch, out, skipped: _write_trace(trace, step, micro, batch, out, skipped)


def _poisoned(out: TaskOutput) -> TaskOutput:
    name = next(iter(out.losses), "loss")
    losses = {**out.losses, name: out.losses.get(name, out.loss) * float("nan")}
    return TaskOutput(out.loss * float("nan"), losses, out.metrics)


def _report_nonfinite(engine: Engine, state: TrainState, bad: list[str], batch: VideoTextBatch) -> None:
    """Every rank skipped this micro-batch; rank 0 says which rank, which terms and which samples."""
    state.nonfinite_skipped += 1
    reports = gather_objects({"rank": engine.rank, "terms": bad, "keys": batch.keys if bad else []},
                             engine.world_size)
    if engine.rank == 0:
        culprits = "; ".join(f"rank {r['rank']}: {', '.join(r['terms'])} non-finite on samples {r['keys']}"
                             for r in reports if r["terms"])
        print(f"step {state.step + 1}: skipping a micro-batch on all ranks: {culprits}", flush=True)


def _row(engine: Engine, batches: BatchStream, state: TrainState, window: _Window,
         hooks: TrainHooks) -> dict[str, float]:
    elapsed = time.perf_counter() - window.start
    row = mean_over_ranks({f"train/{k}": float(v) / max(1, window.counted) for k, v in window.sums.items()},
                          engine.world_size)
    row.update({f"train/lr_{k}": v for k, v in engine.learning_rates().items()})
    for key, value in (("train/grad_norm", engine.grad_norm()), ("train/loss_scale", engine.loss_scale())):
        if value is not None:
            row[key] = value
    row["train/overflow_steps"] = float(engine.overflow_steps())
    row["train/nonfinite_skipped"] = float(state.nonfinite_skipped)
    row["train/samples_seen"] = float(state.samples)
    samples_per_s = window.counted * engine.micro_batch_size * engine.world_size / elapsed
    row["perf/samples_per_s"] = samples_per_s
    row["perf/step_time_s"] = elapsed / max(1, window.steps)
    row["perf/data_wait_frac"] = window.waited / elapsed
    if hooks.flops_per_sample:
        achieved = hooks.flops_per_sample * samples_per_s / engine.world_size
        row["perf/tflops_per_device"] = achieved / 1e12
        if hooks.peak_flops:
            row["perf/mfu"] = achieved / hooks.peak_flops
    row.update(system_stats())
    row.update(batches.stats())  # skip counts by reason (`data/...`), this rank's view
    return row


def save(engine: Engine, save_dir: Path, state: TrainState, client_state: dict[str, Any],
         batches: BatchStream, keep: int) -> None:
    """Collective. Engine states, then this rank's train state (counters, data position, RNG), then — after
    every rank finished — rank 0 marks the tag complete and prunes old ones."""
    tag = tag_for(state.step)
    average_batch_norm_stats(engine.module, engine.world_size)  # the checkpoint holds what every rank evaluates
    engine.save(save_dir, tag, client_state)
    state.data, state.rng = batches.state_dict(), rng.capture(engine.module)
    write_rank_state(Path(save_dir) / tag, engine.rank, state.state_dict())
    if engine.world_size > 1:
        torch.distributed.barrier()
    if engine.rank == 0:
        mark_complete(Path(save_dir) / tag, state.step, engine.world_size)
        prune(Path(save_dir), keep)
    if engine.world_size > 1:
        torch.distributed.barrier()


def _open_trace(trace_dir: Path | None, rank: int):
    if trace_dir is None:
        return None
    Path(trace_dir).mkdir(parents=True, exist_ok=True)
    return (Path(trace_dir) / f"rank_{rank:05d}.jsonl").open("a")


def _write_trace(trace, step: int, micro: int, batch: VideoTextBatch, out: TaskOutput, skipped: bool) -> None:
    if trace is None:
        return
    losses = {k: float(v.detach()) for k, v in out.losses.items()}
    trace.write(json.dumps({"step": step, "micro": micro, "keys": batch.keys, "loss": float(out.loss.detach()),
                            "losses": losses, "skipped": skipped}) + "\n")
    trace.flush()


def _signal_name(signum: int | None) -> str | None:
    return signal.Signals(signum).name if signum is not None else "a signal on another rank"
