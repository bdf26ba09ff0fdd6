"""The run flow shared by pre-training and fine-tuning: processes, engine, resume, preflight, train, report.

A caller describes its run as a `TrainingJob` (the recipe, the strategy, and a function that wraps the model
into its task); everything else — ds_config checks, checkpoints, SIGTERM, exact resume, logging — is the
same for every task.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from snps3_ds.config import RunConfig, TrainConfig, to_dict
from snps3_ds.data.batch import BatchStream
from snps3_ds.data.decode.sample import TaskTexts
from snps3_ds.data.errors import DataQualityError
from snps3_ds.data.loader import StreamPlacement, build_train_loader, training_sets
from snps3_ds.demo.ensure import ensure_demo_data
from snps3_ds.distributed import average_batch_norm_stats
from snps3_ds.engine import rng
from snps3_ds.engine.base import Engine
from snps3_ds.engine.ds_config import EngineSettings, check_against_recipe, check_optimizer_block, load_ds_config
from snps3_ds.engine.factory import EngineKind, make_engine
from snps3_ds.engine.optim import for_global_batch
from snps3_ds.engine.faults import code_revision, library_versions, preflight, preflight_hosts, verify_replicas
from snps3_ds.engine.roster import lost_ranks_error
from snps3_ds.engine.run_checkpoints import newest_complete
from snps3_ds.engine.state import TrainState
from snps3_ds.engine.trainer import TrainHooks, TrainResult, train
from snps3_ds.logging import RunLogger
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.models.snp import SNPModel, visual_parameter_names
from snps3_ds.perf.cpu_features import bf16_warning
from snps3_ds.processes import Processes, barrier, shut_down, start_processes
from snps3_ds.tasks.base import StepPlanningTask
from snps3_ds.run.elastic import (ResumePoint, elastic_note, fit_accumulation, needs_universal, prepare_universal,
                                  rank_state, resume_point, with_universal_loading)

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
    recipe: str = "the recipe"  # its file, for messages


@dataclass
class _Setup:
    procs: Processes
    settings: EngineSettings
    tokenizer: Any
    model: SNPModel
    engine: Engine
    flops: tuple[float | None, float | None]
    roster: list[dict[str, Any]]  # every rank's host, pid and launch (ssh) details, from the host preflight
    point: ResumePoint | None  # the checkpoint this run continues from
    universal: bool = False  # it was written by another world size: loaded through its universal form
    notes: list[str] = field(default_factory=list)  # printed at start: the optimiser's rates, the negatives


def run_training(job: TrainingJob) -> TrainResult:
    cfg, run_dir = job.cfg, Path(job.cfg.train.run_dir)
    setup = _set_up(job)
    procs, engine = setup.procs, setup.engine
    start = _resume_state(setup, job, run_dir / "checkpoints")
    batches, data_error = None, None
    try:
        batches = build_train_loader(cfg.data, cfg.masking, setup.tokenizer, engine.micro_batch_size,
                                     _placement(cfg, procs), resume=start and start.data, texts=job.texts)
    except Exception as err:  # noqa: BLE001 - reported through the preflight so no rank waits forever
        data_error = f"{type(err).__name__}: {err}"
    try:
        result = _train(job, setup, batches, data_error, start)
    except DataQualityError as err:  # the data (or its server) needs fixing, not the code: the message says what
        raise SystemExit(f"DataQualityError: {err}") from None  # failed; a traceback would only bury it
    finally:
        if batches is not None:
            batches.close()
    shut_down(procs.world)
    return result


def _train(job: TrainingJob, setup: _Setup, batches: BatchStream | None, data_error: str | None,
           start: TrainState | None) -> TrainResult:
    """Preflight, the training loop, the replica check and the final evaluation, with collective failures
    that lost ranks reported as such."""
    cfg, run_dir, procs, engine = job.cfg, Path(job.cfg.train.run_dir), setup.procs, setup.engine
    run_config = {"recipe": to_dict(cfg), "ds_config": setup.settings.raw}
    preflight(run_config, engine.module, data_error, procs.rank, procs.world, library_versions())
    if start is not None:  # after the loader started: its start draws from torch's RNG
        if start.rng is not None:
            rng.restore(engine.module, start.rng)
        else:  # resumed on another world size: the saved states belonged to the old ranks
            rng.reseed(cfg.train.seed, start.step, procs.rank)
    logger = RunLogger(run_dir, cfg.logging, to_dict(cfg), enabled=procs.rank == 0)
    if procs.rank == 0:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        (run_dir / "ranks.json").write_text(json.dumps(setup.roster, indent=1))
        print("\n".join([_strategy_line(cfg, setup, job.engine), *setup.notes]), flush=True)
    evaluate = None
    if job.validation:
        evaluate = _on_shared_statistics(job.validation(engine, setup.tokenizer, procs), engine)
    hooks = TrainHooks(evaluate=evaluate, trace_dir=run_dir / "trace" if cfg.train.trace_samples else None)
    hooks.flops_per_sample, hooks.peak_flops = setup.flops
    began, samples_before = time.perf_counter(), start.samples if start else 0
    with _naming_lost_ranks(setup, cfg.train.collective_timeout_s, run_dir / "checkpoints"):
        result = train(engine, batches, _session(cfg.train), logger, run_dir / "checkpoints", {"config": run_config},
                       start, hooks)
        _report(result, engine, procs, run_dir, time.perf_counter() - began, samples_before)
        if evaluate is not None and result.stopped_by is None:
            _final_evaluation(evaluate, result.state.step, logger, run_dir, procs.rank)
    logger.close(exit_code(result))
    return result


def _set_up(job: TrainingJob) -> _Setup:
    """Processes, host preflight, resume point and strategy, demo data, model, task and engine; a missing
    shard path fails before any model is built."""
    cfg = job.cfg
    settings = load_ds_config(job.ds_config)
    procs = start_processes(group=job.engine == "deepspeed", timeout_s=cfg.train.collective_timeout_s)
    roster = preflight_hosts({"recipe": to_dict(cfg), "ds_config": settings.raw}, procs.rank, procs.world,
                             library_versions(), code_revision())
    settings, point, universal = _strategy(job, settings, procs)
    check_optimizer_block(settings, cfg.optim, job.recipe)
    optim, optim_line = for_global_batch(cfg.optim, settings.global_batch_size(procs.world))
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
    engine = make_engine(job.engine, task, settings, optim, cfg.train.max_steps, visual, procs)
    if cfg.train.audit_optimizer_state and hasattr(engine, "audit_dir"):
        engine.audit_dir = Path(cfg.train.run_dir) / "audit"
    notes = [optim_line, *_step_lines(task, settings, cfg, procs)]
    return _Setup(procs, settings, tokenizer, model, engine, flops, roster, point, universal, notes)


def _step_lines(task: nn.Module, settings: EngineSettings, cfg: RunConfig, procs: Processes) -> list[str]:
    if not isinstance(task, StepPlanningTask):
        return []
    return [task.describe_step(settings.micro_batch_size, settings.grad_accum, procs.world, cfg.data.num_clips)]


def _strategy(job: TrainingJob, settings: EngineSettings,
              procs: Processes) -> tuple[EngineSettings, ResumePoint | None, bool]:
    """The checkpoint to continue from and the ds_config for this world size: accumulation keeps the global
    batch; a checkpoint from another world size is converted to its universal form and loaded as such."""
    point = resume_point(Path(job.cfg.train.run_dir) / "checkpoints", job.resume)
    fitted = fit_accumulation(settings, job.cfg.train, procs.world, point)
    check_against_recipe(fitted, job.cfg.train, procs.world)
    universal = needs_universal(point, procs.world, job.engine, fitted)
    if universal:
        prepare_universal(point, procs)
        fitted = with_universal_loading(fitted)
    if point is not None and point.written_by != procs.world and procs.rank == 0:
        print(elastic_note(point, settings, fitted, procs.world), flush=True)
    return fitted, point, universal


def _placement(cfg: RunConfig, procs: Processes) -> StreamPlacement:
    return StreamPlacement(procs.rank, procs.world, cfg.train.seed)


def _strategy_line(cfg: RunConfig, setup: _Setup, engine_kind: str) -> str:
    settings, engine = setup.settings, setup.engine
    return (f"training {cfg.train.max_steps} steps: micro {engine.micro_batch_size} x accumulation "
            f"{engine.grad_accum} x world {setup.procs.world} = global batch "
            f"{settings.global_batch_size(setup.procs.world)}, {settings.precision}, ZeRO stage "
            f"{settings.zero_stage}{' + optimizer offload' if settings.offload_optimizer else ''}, "
            f"engine {engine_kind}")


def _resume_state(setup: _Setup, job: TrainingJob, checkpoints: Path) -> TrainState | None:
    """Load the engine states of the chosen checkpoint; return this rank's train state (or None: fresh)."""
    point, procs = setup.point, setup.procs
    if point is None:
        if job.resume and procs.rank == 0:
            print(f"--resume {job.resume}: no complete checkpoint in {checkpoints}; starting fresh", flush=True)
        return None
    if setup.universal:
        setup.engine.load_universal(point.folder)
    else:
        setup.engine.load(checkpoints, point.tag)
    state = rank_state(point, procs.rank, procs.world)
    if procs.rank == 0:
        print(f"resuming from {point.folder}: {state.counters()}", flush=True)
    return state


@contextmanager
def _naming_lost_ranks(setup: _Setup, timeout_s: float, checkpoints: Path) -> Iterator[None]:
    """A collective that fails because ranks are gone becomes a LostRanksError naming them (host, pid) and the
    checkpoint to resume from; any other error passes through unchanged."""
    try:
        yield
    except RuntimeError as err:
        procs = setup.procs
        lost = lost_ranks_error(err, setup.roster, procs.rank, procs.world, min(15.0, timeout_s),
                                newest_complete(checkpoints))
        if lost is None:
            raise
        print(str(lost), flush=True)
        raise lost from err


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


def _on_shared_statistics(evaluate: Callable[[int], dict[str, float]], engine: Engine
                          ) -> Callable[[int], dict[str, float]]:
    """evaluate(step) after every rank takes the ranks' mean BatchNorm statistics, so a 2-rank validation
    scores every held-out sample with one model, the one the checkpoint then holds."""
    def on_shared(step: int) -> dict[str, float]:
        average_batch_norm_stats(engine.module, engine.world_size)
        return evaluate(step)
    return on_shared


def _final_evaluation(evaluate: Callable[[int], dict[str, float]], step: int, logger: RunLogger, run_dir: Path,
                      rank: int) -> None:
    metrics = evaluate(step)
    logger.log(step, metrics, echo=False)
    if rank == 0:
        (run_dir / "eval_final.json").write_text(json.dumps(metrics, indent=2))
        width = max(map(len, metrics), default=0)
        print("final evaluation:\n" + "\n".join(f"  {k:<{width}}  {v:8.2f}" for k, v in metrics.items()), flush=True)


def _session(train_cfg: TrainConfig) -> TrainConfig:
    """What the loop runs this time: up to train.stop_after_step when set (the engine's schedule was built
    for train.max_steps, which stays the run's length)."""
    if train_cfg.stop_after_step and train_cfg.stop_after_step < train_cfg.max_steps:
        return replace(train_cfg, max_steps=train_cfg.stop_after_step)
    return train_cfg


def _report(result: TrainResult, engine: Engine, procs: Processes, run_dir: Path, seconds: float,
            samples_before: int) -> None:
    identical, prints = verify_replicas(engine.module, procs.rank, procs.world)
    if procs.rank != 0:
        return
    state = result.state
    done = state.samples - samples_before
    print(f"{'stopped by ' + result.stopped_by if result.stopped_by else 'done'}: step {state.step}, "
          f"{done} samples in {seconds:.0f} s ({done / max(seconds, 1e-9):.1f} samples/s); "
          f"checkpoint in {run_dir / 'checkpoints'}", flush=True)
    if identical:
        print(f"parameters and BatchNorm statistics identical on all {procs.world} ranks (fingerprint {prints[0]})",
              flush=True)
    else:
        print(f"WARNING: rank parameters or BatchNorm statistics differ after training: {prints}", flush=True)


def exit_code(result: TrainResult) -> int:
    """0 when training finished; 128 + signal number when a stop signal ended it (as a killed process would)."""
    if result.stopped_by is None:
        return 0
    try:
        return 128 + int(signal.Signals[result.stopped_by])
    except KeyError:
        return 128 + int(signal.SIGTERM)
