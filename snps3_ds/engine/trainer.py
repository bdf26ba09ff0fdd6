"""The training loop. It knows engines, batches and TaskOutputs; nothing of the method's internals."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from snps3_ds.config import TrainConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.engine.base import Engine, mean_over_ranks
from snps3_ds.logging import RunLogger


@dataclass
class TrainState:
    step: int = 0  # optimiser steps done
    samples: int = 0  # training samples consumed, all ranks


def train(engine: Engine, batches: Iterator[VideoTextBatch], cfg: TrainConfig, logger: RunLogger,
          save_dir: Path, client_state: dict[str, Any]) -> TrainState:
    """Run cfg.max_steps optimiser steps of micro_batch x accumulation x world samples each; save at the end."""
    state = TrainState()
    sums: dict[str, float] = defaultdict(float)
    counted, waited, window_start = 0, 0.0, time.perf_counter()
    global_batch = engine.micro_batch_size * engine.grad_accum * engine.world_size
    while state.step < cfg.max_steps:
        stepped = False
        while not stepped:
            fetch_start = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - fetch_start
            out = engine.forward(batch)
            engine.backward(out.loss)
            stepped = engine.step()
            for name, value in {"loss": out.loss, **out.losses, **out.metrics}.items():
                sums[name] += float(value.detach())
            counted += 1
        state.step += 1
        state.samples += global_batch
        if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
            elapsed = time.perf_counter() - window_start
            row = mean_over_ranks({f"train/{k}": v / counted for k, v in sums.items()}, engine.world_size)
            row.update({f"train/lr_{k}": v for k, v in engine.learning_rates().items()})
            row["perf/samples_per_s"] = counted * engine.micro_batch_size * engine.world_size / elapsed
            row["perf/data_wait_frac"] = waited / elapsed
            row.update(_data_stats(batches))
            logger.log(state.step, row)
            sums.clear()
            counted, waited, window_start = 0, 0.0, time.perf_counter()
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.step < cfg.max_steps:
            save(engine, save_dir, state, client_state)
    save(engine, save_dir, state, client_state)
    return state


def _data_stats(batches: Iterator[VideoTextBatch]) -> dict[str, float]:
    """Skip counts by reason (`data/...`) when the loader keeps them (this rank's view)."""
    stats = getattr(batches, "stats", None)
    return stats() if callable(stats) else {}


def save(engine: Engine, save_dir: Path, state: TrainState, client_state: dict[str, Any]) -> None:
    engine.save(save_dir, f"step_{state.step:08d}", {**client_state, "train_state": asdict(state)})
