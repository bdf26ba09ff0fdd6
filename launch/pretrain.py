"""Pre-train SNP-S3 with DeepSpeed (or the plain-torch engine), from one CPU process to many nodes.

    deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero2.json [--config RECIPE] [a.b=value ...]
    python launch/pretrain.py --engine torch --config RECIPE train.max_steps=10
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import _setup  # noqa: F401  (import path)
import torch
import yaml

from snps3_ds.config import RunConfig, to_dict
from snps3_ds.data.loader import build_train_loader, training_sets
from snps3_ds.engine.base import share_cpu_threads
from snps3_ds.engine.ds_config import check_against_recipe, load_ds_config
from snps3_ds.engine.trainer import train
from snps3_ds.logging import RunLogger
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.models.snp import visual_parameter_names
from snps3_ds.data.text import SpecialIds
from snps3_ds.tasks.attentive import AttentiveMasking
from snps3_ds.tasks.pretrain import PretrainTask


def parse_args(argv: list[str] | None = None):
    parser = _setup.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--ds_config", default=str(_setup.DEFAULT_DS_CONFIG), help="DeepSpeed JSON (strategy)")
    parser.add_argument("--engine", choices=["deepspeed", "torch"], default="deepspeed")
    parser.add_argument("--local_rank", type=int, default=0, help="set by the deepspeed launcher")
    return parser.parse_args(argv)


def start_processes(engine_kind: str) -> tuple[int, int, int]:
    """(rank, world size, local world size) after starting torch.distributed where needed."""
    if engine_kind == "torch":
        return 0, 1, 1
    from snps3_ds.engine.deepspeed_engine import init_distributed

    return init_distributed()


def barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg: RunConfig = _setup.load_run_config(args)
    settings = load_ds_config(args.ds_config)
    rank, world, local_world = start_processes(args.engine)
    share_cpu_threads(local_world)
    check_against_recipe(settings, cfg.train, world)
    if rank == 0:
        _setup.ensure_demo_data(cfg)
    barrier(world)
    training_sets(cfg.data)  # a missing shard path fails here, before any model is built

    torch.manual_seed(cfg.train.seed)
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer)
    attentive = None
    if cfg.masking.attentive_probability > 0:
        attentive = AttentiveMasking(cfg.masking.attentive_probability, cfg.masking.probability,
                                     SpecialIds.from_tokenizer(tokenizer), cfg.train.seed, rank)
    task = PretrainTask(model, cfg.objectives, cfg.model, rank, world, attentive)
    engine = make_engine(args.engine, task, settings, cfg)
    batches = build_train_loader(cfg.data, cfg.masking, tokenizer, engine.micro_batch_size, rank, cfg.train.seed)

    run_dir = Path(cfg.train.run_dir)
    logger = RunLogger(run_dir, cfg.logging, to_dict(cfg), enabled=rank == 0)
    if rank == 0:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        print(f"training {cfg.train.max_steps} steps: micro {engine.micro_batch_size} x accumulation "
              f"{engine.grad_accum} x world {world} = global batch {settings.global_batch_size(world)}, "
              f"{settings.precision}, ZeRO stage {settings.zero_stage}, engine {args.engine}", flush=True)
    start = time.perf_counter()
    state = train(engine, batches, cfg.train, logger, run_dir / "checkpoints",
                  {"config": to_dict(cfg), "ds_config": settings.raw})
    if rank == 0:
        seconds = time.perf_counter() - start
        print(f"done: {state.step} steps, {state.samples} samples in {seconds:.0f} s "
              f"({state.samples / seconds:.1f} samples/s); checkpoint in {run_dir / 'checkpoints'}", flush=True)
    logger.close()


def make_engine(kind: str, task: PretrainTask, settings, cfg: RunConfig):
    visual = {f"model.{name}" for name in visual_parameter_names(task.model)}
    if kind == "torch":
        from snps3_ds.engine.torch_engine import TorchEngine

        return TorchEngine(task, settings, cfg.optim, cfg.train.max_steps, visual)
    from snps3_ds.engine.deepspeed_engine import DeepSpeedEngine

    return DeepSpeedEngine(task, settings, cfg.optim, cfg.train.max_steps, visual)


if __name__ == "__main__":
    sys.exit(main())
