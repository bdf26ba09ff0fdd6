"""The run flow shared by pre-training and fine-tuning: processes, engine, resume, preflight, train, report.

A launch script supplies a recipe and a function that wraps the model into its task; everything else —
ds_config checks, checkpoints, SIGTERM, exact resume, logging — is the same for every task.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _setup  # noqa: F401  (import path)
import torch
import yaml
from torch import nn

from snps3_ds.config import ConfigError, RunConfig, to_dict
from snps3_ds.data.loader import TaskTexts, build_train_loader, training_sets
from snps3_ds.engine import rng
from snps3_ds.engine.base import share_cpu_threads
from snps3_ds.engine.ds_config import EngineSettings, check_against_recipe, load_ds_config
from snps3_ds.engine.faults import library_versions, preflight, verify_replicas
from snps3_ds.engine.run_checkpoints import newest_complete, rank_file, read_complete, resolve_resume
from snps3_ds.engine.trainer import TrainHooks, TrainResult, TrainState, train
from snps3_ds.logging import RunLogger
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.models.snp import SNPModel, visual_parameter_names

TaskBuilder = Callable[[SNPModel, Any, int, int], nn.Module]  # (model, tokenizer, rank, world) -> task


def add_training_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ds_config", default=str(_setup.DEFAULT_DS_CONFIG), help="DeepSpeed JSON (strategy)")
    parser.add_argument("--engine", choices=["deepspeed", "torch"], default="deepspeed")
    parser.add_argument("--resume", default=None,
                        help="'auto': the newest complete checkpoint in RUN_DIR/checkpoints (a fresh start when "
                             "there is none); or a tag such as step_00000100")
    parser.add_argument("--local_rank", type=int, default=0, help="set by the deepspeed launcher")


@dataclass
class Processes:
    rank: int
    world: int
    local_world: int


def start_processes(engine_kind: str) -> Processes:
    """Start torch.distributed where needed (a plain `python` run is a world of one)."""
    if engine_kind == "torch":
        return Processes(0, 1, 1)
    from snps3_ds.engine.deepspeed_engine import init_distributed

    return Processes(*init_distributed())


def barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def make_engine(kind: str, task: nn.Module, model: SNPModel, settings: EngineSettings, cfg: RunConfig):
    prefix = next(name for name, module in task.named_modules() if module is model)
    visual = {f"{prefix}.{name}" if prefix else name for name in visual_parameter_names(model)}
    if kind == "torch":
        from snps3_ds.engine.torch_engine import TorchEngine

        return TorchEngine(task, settings, cfg.optim, cfg.train.max_steps, visual)
    from snps3_ds.engine.deepspeed_engine import DeepSpeedEngine

    return DeepSpeedEngine(task, settings, cfg.optim, cfg.train.max_steps, visual)


def _resume_state(engine, checkpoints: Path, resume: str | None, procs: Processes) -> dict[str, Any] | None:
    """Load the engine states of the chosen checkpoint; return this rank's client state (or None: fresh)."""
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
    state = torch.load(rank_file(checkpoints / tag, procs.rank), map_location="cpu", weights_only=False)
    if procs.rank == 0:
        print(f"resuming from {checkpoints / tag}: step {state['train_state']['step']}, "
              f"{state['train_state']['samples']} samples seen", flush=True)
    return state


Validation = Callable[[Any, Any, Processes], Callable[[int], "dict[str, float]"]]
"""(engine, tokenizer, processes) -> a collective evaluate(step) returning `val/...` metrics."""


def run_training(args: argparse.Namespace, cfg: RunConfig, build_task: TaskBuilder,
                 init: Callable[[SNPModel], None] | None = None, texts: TaskTexts | None = None,
                 validation: Validation | None = None) -> TrainResult:
    settings = load_ds_config(args.ds_config)
    procs = start_processes(args.engine)
    share_cpu_threads(procs.local_world)
    check_against_recipe(settings, cfg.train, procs.world)
    if procs.rank == 0:
        _setup.ensure_demo_data(cfg)
    barrier(procs.world)
    training_sets(cfg.data)  # a missing shard path fails here, before any model is built

    torch.manual_seed(cfg.train.seed)
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer)
    if init is not None:
        init(model)
    task = build_task(model, tokenizer, procs.rank, procs.world)
    flops = _flops(task, model, cfg, settings.micro_batch_size)  # before the engine wraps (and casts) the model
    engine = make_engine(args.engine, task, model, settings, cfg)
    run_dir = Path(cfg.train.run_dir)
    resumed = _resume_state(engine, run_dir / "checkpoints", args.resume, procs)

    batches, data_error = None, None
    try:
        batches = build_train_loader(cfg.data, cfg.masking, tokenizer, engine.micro_batch_size, procs.rank,
                                     cfg.train.seed, procs.world, resume=resumed and resumed["data"], texts=texts)
    except Exception as err:  # noqa: BLE001 - reported through the preflight so no rank waits forever
        data_error = f"{type(err).__name__}: {err}"
    run_config = {"recipe": to_dict(cfg), "ds_config": settings.raw}
    preflight(run_config, engine.module, data_error, procs.rank, procs.world, library_versions())
    if resumed is not None:
        rng.restore(engine.module, resumed["rng"])  # after the loader started: its start draws from torch's RNG

    logger = RunLogger(run_dir, cfg.logging, to_dict(cfg), enabled=procs.rank == 0)
    if procs.rank == 0:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        print(f"training {cfg.train.max_steps} steps: micro {engine.micro_batch_size} x accumulation "
              f"{engine.grad_accum} x world {procs.world} = global batch {settings.global_batch_size(procs.world)}, "
              f"{settings.precision}, ZeRO stage {settings.zero_stage}"
              f"{' + optimizer offload' if settings.offload_optimizer else ''}, engine {args.engine}", flush=True)
    evaluate = validation(engine, tokenizer, procs) if validation else None
    hooks = TrainHooks(evaluate=evaluate, trace_dir=run_dir / "trace" if cfg.train.trace_samples else None)
    hooks.flops_per_sample, hooks.peak_flops = flops
    start_time = time.perf_counter()
    start = TrainState(**resumed["train_state"]) if resumed else None
    result = train(engine, batches, cfg.train, logger, run_dir / "checkpoints", run_config,
                   TrainState(**resumed["train_state"]) if resumed else None, hooks)
    _report(result, engine, procs, run_dir, time.perf_counter() - start_time, start)
    if evaluate is not None and result.stopped_by is None:
        _final_evaluation(evaluate, result.state.step, logger, run_dir, procs.rank)
    logger.close(exit_code(result))
    shut_down(procs.world)
    return result


def shut_down(world: int) -> None:
    """Leave the process group together: a gloo/NCCL group torn down by interpreter exit while its threads
    still run can abort the process ("terminate called without an active exception") after a good run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if world > 1:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


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
        import json

        (run_dir / "eval_final.json").write_text(json.dumps(metrics, indent=2))
        width = max(map(len, metrics), default=0)
        print("final evaluation:\n" + "\n".join(f"  {k:<{width}}  {v:8.2f}" for k, v in metrics.items()), flush=True)


def _report(result: TrainResult, engine, procs: Processes, run_dir: Path, seconds: float,
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


def exit_with(result: TrainResult) -> None:
    sys.exit(exit_code(result))
