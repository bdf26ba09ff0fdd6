"""The run flow shared by pre-training and fine-tuning: processes, engine, resume, preflight, train, report.

A caller describes its run as a `TrainingJob` (the recipe, the strategy, and a function that wraps the model
into its task); everything else — ds_config checks, checkpoints, SIGTERM, exact resume, logging — is the
same for every task.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from snps3_ds.config import ConfigError, RunConfig, to_dict
from snps3_ds.data.decode.sample import TaskTexts
from snps3_ds.data.loader import StreamPlacement, build_train_loader, training_sets
from snps3_ds.demo.ensure import ensure_demo_data
from snps3_ds.engine import rng
from snps3_ds.engine.base import Engine
from snps3_ds.engine.ds_config import EngineSettings, check_against_recipe, load_ds_config
from snps3_ds.engine.factory import EngineKind, make_engine
from snps3_ds.engine.faults import library_versions, preflight, verify_replicas
from snps3_ds.engine.run_checkpoints import newest_complete, rank_file, read_complete, resolve_resume
from snps3_ds.engine.state import TrainState
from snps3_ds.engine.trainer import TrainHooks, TrainResult, train
from snps3_ds.logging import RunLogger
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.models.snp import SNPModel, visual_parameter_names
from snps3_ds.perf.cpu_features import bf16_warning
from snps3_ds.processes import Processes, barrier, shut_down, start_processes

TaskBuilder = Callable[[SNPModel, Any, int, int], nn.Module]  # (model, tokenizer, rank, world) -> task
Validation = Callable[[Engine, Any, Processes], Callable[[int], "dict[str, float]"]]
"""(engine, tokenizer, processes) -> a collective evaluate(step) returning `val/...` metrics."""


@dataclass
class TrainingJob:
    """What an entry point hands the run flow."""

    cfg: RunConfig
    ds_config: str
    build_task: TaskBuilder
    engine: EngineKind = "deepspeed"
    resume: str | None = None  # "auto", a tag, or None (a fresh run)
    init: Callable[[SNPModel], None] | None = None  # e.g. load pre-trained weights into the model
    texts: TaskTexts | None = None  # downstream tasks: which texts a shard video carries
    validation: Validation | None = None


@dataclass
class _Setup:
    procs: Processes
    settings: EngineSettings
    tokenizer: Any
    model: SNPModel
    engine: Engine
    flops: tuple[float | None, float | None]


def run_training(job: TrainingJob) -> TrainResult:
    cfg, run_dir = job.cfg, Path(job.cfg.train.run_dir)
    setup = _set_up(job)
    procs, engine = setup.procs, setup.engine
    start = _resume_state(engine, run_dir / "checkpoints", job.resume, procs)
    batches, data_error = None, None
    try:
        batches = build_train_loader(cfg.data, cfg.masking, setup.tokenizer, engine.micro_batch_size,
                                     _placement(cfg, procs), resume=start and start.data, texts=job.texts)
    except Exception as err:  # noqa: BLE001 - reported through the preflight so no rank waits forever
        data_error = f"{type(err).__name__}: {err}"
    run_config = {"recipe": to_dict(cfg), "ds_config": setup.settings.raw}
    preflight(run_config, engine.module, data_error, procs.rank, procs.world, library_versions())
    if start is not None and start.rng is not None:
        rng.restore(engine.module, start.rng)  # after the loader started: its start draws from torch's RNG
    logger = RunLogger(run_dir, cfg.logging, to_dict(cfg), enabled=procs.rank == 0)
    if procs.rank == 0:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        print(_strategy_line(cfg, setup, job.engine), flush=True)
    evaluate = job.validation(engine, setup.tokenizer, procs) if job.validation else None
    hooks = TrainHooks(evaluate=evaluate, trace_dir=run_dir / "trace" if cfg.train.trace_samples else None)
    hooks.flops_per_sample, hooks.peak_flops = setup.flops
    began = time.perf_counter()
    result = train(engine, batches, cfg.train, logger, run_dir / "checkpoints", {"config": run_config}, start, hooks)
    _report(result, engine, procs, run_dir, time.perf_counter() - began, start)
    if evaluate is not None and result.stopped_by is None:
        _final_evaluation(evaluate, result.state.step, logger, run_dir, procs.rank)
    logger.close(exit_code(result))
    shut_down(procs.world)
    return result


def _set_up(job: TrainingJob) -> _Setup:
    """Processes, ds_config checks, demo data, model, task and engine; a missing shard path fails before any
    model is built."""
    cfg = job.cfg
    settings = load_ds_config(job.ds_config)
    procs = start_processes(group=job.engine == "deepspeed")
    check_against_recipe(settings, cfg.train, procs.world)
    warning = bf16_warning(settings.precision, procs.device.type, job.ds_config)
    if warning and procs.rank == 0:
        print(warning, flush=True)
    if procs.rank == 0:
        ensure_demo_data(cfg)
    barrier(procs.world)
    training_sets(cfg.data)
    torch.manual_seed(cfg.train.seed)
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer)
    if job.init is not None:
        job.init(model)
    task = job.build_task(model, tokenizer, procs.rank, procs.world)
    flops = _flops(task, model, cfg, settings.micro_batch_size)  # before the engine wraps (and casts) the model
    prefix = next(name for name, module in task.named_modules() if module is model)
    visual = {f"{prefix}.{name}" if prefix else name for name in visual_parameter_names(model)}
    engine = make_engine(job.engine, task, settings, cfg.optim, cfg.train.max_steps, visual, procs)
    return _Setup(procs, settings, tokenizer, model, engine, flops)


def _placement(cfg: RunConfig, procs: Processes) -> StreamPlacement:
    return StreamPlacement(procs.rank, procs.world, cfg.train.seed)


def _strategy_line(cfg: RunConfig, setup: _Setup, engine_kind: str) -> str:
    settings, engine = setup.settings, setup.engine
    return (f"training {cfg.train.max_steps} steps: micro {engine.micro_batch_size} x accumulation "
            f"{engine.grad_accum} x world {setup.procs.world} = global batch "
            f"{settings.global_batch_size(setup.procs.world)}, {settings.precision}, ZeRO stage "
            f"{settings.zero_stage}{' + optimizer offload' if settings.offload_optimizer else ''}, "
            f"engine {engine_kind}")


def _resume_state(engine: Engine, checkpoints: Path, resume: str | None, procs: Processes) -> TrainState | None:
    """Load the engine states of the chosen checkpoint; return this rank's train state (or None: fresh)."""
    tag = resolve_resume(checkpoints, resume)
    if not resume and newest_complete(checkpoints):
        raise ConfigError(f"{checkpoints} already holds checkpoints (newest {newest_complete(checkpoints)}): pass "
                          f"--resume auto to continue that run, or choose another train.run_dir")
    if tag is None:
        if resume and procs.rank == 0:
            print(f"--resume {resume}: no complete checkpoint in {checkpoints}; starting fresh", flush=True)
        return None
    written_by = read_complete(checkpoints / tag)["world_size"]
    if written_by != procs.world:
        raise ConfigError(f"{checkpoints / tag} was written by {written_by} ranks, this run has {procs.world}: ZeRO "
                          f"optimizer partitions cannot be re-split; start a new run from its weights instead "
                          f"(launch/export.py, then --init)")
    engine.load(checkpoints, tag)
    state = TrainState.from_state_dict(torch.load(rank_file(checkpoints / tag, procs.rank), map_location="cpu",
                                                  weights_only=True))
    if procs.rank == 0:
        print(f"resuming from {checkpoints / tag}: {state.counters()}", flush=True)
    return state


def _flops(task: nn.Module, model: SNPModel, cfg: RunConfig, micro: int) -> tuple[float | None, float | None]:
    """Training FLOPs per sample (pre-training-style tasks) and the device's peak, for perf/mfu."""
    from snps3_ds.perf.flops import peak_flops, training_flops_per_sample
    from snps3_ds.tasks.pretrain import PretrainTask

    if not isinstance(task, PretrainTask):
        return None, None
    per_sample = training_flops_per_sample(model, cfg.model, cfg.objectives, cfg.data.num_clips, cfg.data.image_size,
                                           cfg.data.max_text_len, micro_batch_size=micro,
                                           mlm_probability=cfg.masking.probability)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    return per_sample, peak_flops(device)


def _final_evaluation(evaluate: Callable[[int], dict[str, float]], step: int, logger: RunLogger, run_dir: Path,
                      rank: int) -> None:
    metrics = evaluate(step)
    logger.log(step, metrics, echo=False)
    if rank == 0:
        (run_dir / "eval_final.json").write_text(json.dumps(metrics, indent=2))
        width = max(map(len, metrics), default=0)
        print("final evaluation:\n" + "\n".join(f"  {k:<{width}}  {v:8.2f}" for k, v in metrics.items()), flush=True)


def _report(result: TrainResult, engine: Engine, procs: Processes, run_dir: Path, seconds: float,
            start: TrainState | None) -> None:
    identical, prints = verify_replicas(engine.module, procs.rank, procs.world)
    if procs.rank != 0:
        return
    state = result.state
    done = state.samples - (start.samples if start else 0)
    print(f"{'stopped by ' + result.stopped_by if result.stopped_by else 'done'}: step {state.step}, "
          f"{done} samples in {seconds:.0f} s ({done / max(seconds, 1e-9):.1f} samples/s); "
          f"checkpoint in {run_dir / 'checkpoints'}", flush=True)
    if identical:
        print(f"parameters identical on all {procs.world} ranks (fingerprint {prints[0]})", flush=True)
    else:
        print(f"WARNING: rank parameters differ after training: {prints}", flush=True)


def exit_code(result: TrainResult) -> int:
    """0 when training finished; 128 + signal number when a stop signal ended it (as a killed process would)."""
    if result.stopped_by is None:
        return 0
    try:
        return 128 + int(signal.Signals[result.stopped_by])
    except KeyError:
        return 128 + int(signal.SIGTERM)
