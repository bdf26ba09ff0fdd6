"""Resuming a run on the same or another number of ranks (DESIGN §5, elastic resume).

What a checkpoint written by W0 ranks needs to continue on W ranks:
- the same global batch G (samples per optimiser step): the recipe's train.global_batch_size, else the
  checkpoint's own (samples seen / steps done); gradient accumulation becomes G / (micro x W), rewritten
  in the in-memory ds_config before deepspeed.initialize, and a G that does not divide is refused;
- the ZeRO optimiser partitions re-cut for W: rank 0 converts the checkpoint once with DeepSpeed's
  ds_to_universal (TAG/universal) while the others wait, and the engine loads it with
  `checkpoint.load_universal` (weights, fp32 masters, Adam moments and step counts);
- the data position, which is global (snps3_ds.data.stream.order), so every rank starts from rank 0's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from snps3_ds.config import ConfigError, TrainConfig
from snps3_ds.engine.ds_config import EngineSettings
from snps3_ds.engine.run_checkpoints import newest_complete, rank_file, read_complete, resolve_resume
from snps3_ds.engine.safe_load import load_plain
from snps3_ds.engine.state import TrainState
from snps3_ds.processes import Processes

CONVERSION_TIMEOUT_S = 3600.0  # ranks wait this long for rank 0's ds_to_universal (large models take minutes)


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from and what its writer was."""

    folder: Path  # CHECKPOINTS/TAG
    written_by: int  # world size of the run that wrote it
    global_batch: int | None  # samples per optimiser step in that run (None before the first step)

    @property
    def tag(self) -> str:
        return self.folder.name


def resume_point(checkpoints: Path, resume: str | None) -> ResumePoint | None:
    """The checkpoint `--resume` names (None: a fresh run); refuses to start over a run folder that holds
    checkpoints unless asked to resume."""
    if not resume and newest_complete(checkpoints):
        raise ConfigError(f"{checkpoints} already holds checkpoints (newest {newest_complete(checkpoints)}): pass "
                          f"--resume auto to continue that run, or choose another train.run_dir")
    tag = resolve_resume(checkpoints, resume)
    if tag is None:
        return None
    folder = Path(checkpoints) / tag
    first = read_rank_state(folder, 0)
    per_step = first.samples // first.step if first.step else None
    return ResumePoint(folder, int(read_complete(folder)["world_size"]), per_step)


def read_rank_state(folder: Path, rank: int) -> TrainState:
    return TrainState.from_state_dict(load_plain(rank_file(folder, rank)))


def fit_accumulation(settings: EngineSettings, train: TrainConfig, world: int,
                     point: ResumePoint | None) -> EngineSettings:
    """The ds_config with gradient accumulation set so micro x accumulation x world is the run's global batch:
    the recipe's, else on another world size the checkpoint's; on the same world size the ds_config's stands."""
    elastic = point is not None and point.written_by != world
    target = train.global_batch_size or (point.global_batch if elastic else None)
    if target is None:
        return settings
    per_step = settings.micro_batch_size * world
    if target % per_step:
        source = "the recipe's train.global_batch_size" if train.global_batch_size else \
            f"the global batch of {point.folder} (written by {point.written_by} ranks)"
        raise ConfigError(f"{source} is {target}, which micro {settings.micro_batch_size} x world {world} = "
                          f"{per_step} does not divide: run on a world size that divides {target // settings.micro_batch_size}"
                          f" (or change train_micro_batch_size_per_gpu in {settings.path})")
    accumulation = target // per_step
    if accumulation == settings.grad_accum:
        return settings
    return replace(settings, grad_accum=accumulation, raw={**settings.raw, "gradient_accumulation_steps": accumulation})


def needs_universal(point: ResumePoint | None, world: int, engine_kind: str, settings: EngineSettings) -> bool:
    """ZeRO partitions (stage >= 1) written by another world size: only the universal form loads them.
    The plain-torch engine and ZeRO-0 keep whole optimiser states, which load on any world size."""
    return point is not None and point.written_by != world and engine_kind == "deepspeed" and settings.zero_stage > 0


def with_universal_loading(settings: EngineSettings) -> EngineSettings:
    raw = {**settings.raw, "checkpoint": {**settings.raw.get("checkpoint", {}), "load_universal": True}}
    return replace(settings, raw=raw)


def prepare_universal(point: ResumePoint, procs: Processes) -> None:
    """Collective: rank 0 writes TAG/universal once (ds_to_universal); every rank returns when it exists.
    The wait uses its own gloo group with a long timeout: a conversion may outlast the collective timeout,
    and a rank 0 that fails exits, which ends the others' wait at once."""
    from snps3_ds.engine.deepspeed_engine import convert_to_universal

    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=CONVERSION_TIMEOUT_S)) if procs.world > 1 else None
    if procs.rank == 0:
        print(f"converting {point.folder} (written by {point.written_by} ranks) to a universal checkpoint for "
              f"{procs.world} ranks", flush=True)
        convert_to_universal(point.folder)
    if group is not None:
        dist.barrier(group=group)
        dist.destroy_process_group(group)


def rank_state(point: ResumePoint, rank: int, world: int) -> TrainState:
    """This rank's train state: its own file on the same world size; otherwise rank 0's counters and data
    position (global, the same on every rank) without RNG states, which belonged to the old ranks."""
    if point.written_by == world:
        return read_rank_state(point.folder, rank)
    state = read_rank_state(point.folder, 0)
    state.rng = None
    return state


def elastic_note(point: ResumePoint, before: EngineSettings, after: EngineSettings, world: int) -> str:
    return (f"elastic resume: {point.folder} was written by {point.written_by} ranks, this run has {world}: "
            f"gradient accumulation {after.grad_accum} (the ds_config says {before.grad_accum}) keeps the global "
            f"batch {after.global_batch_size(world)}; ZeRO optimiser state (fp32 weights, Adam moments, step counts) "
            f"re-partitioned through its universal checkpoint")
