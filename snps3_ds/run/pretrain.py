"""Pre-training: the PretrainTask over the recipe's objectives, with zero-shot retrieval as validation."""

from __future__ import annotations

import argparse

from snps3_ds.config import RunConfig
from snps3_ds.data.loader import build_eval_loader
from snps3_ds.engine.trainer import TrainResult
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.retrieval import RetrievalOptions, run_retrieval
from snps3_ds.run import cli
from snps3_ds.run.training import TrainingJob, run_training
from snps3_ds.tasks.pretrain import PretrainTask, build_pretrain_task


def parse_args(argv: list[str] | None = None, description: str = "Pre-train SNP-S3") -> argparse.Namespace:
    parser = cli.base_parser(description)
    cli.add_training_args(parser)
    return parser.parse_args(argv)


def pretrain_task(cfg: RunConfig):
    def build(model, tokenizer, rank: int, world: int) -> PretrainTask:
        return build_pretrain_task(model, cfg, tokenizer, rank, world)
    return build


def zero_shot_validation(cfg: RunConfig):
    """Zero-shot retrieval on data.eval_shards as `val/...` (every train.eval_every steps and at the end)."""
    def make(engine, tokenizer, procs):
        clips = cfg.eval.num_clips or cfg.data.num_clips
        loader = build_eval_loader(cfg.data, tokenizer, cfg.eval.batch_size, clips)

        def evaluate(step: int) -> dict[str, float]:
            model = engine.module.model
            result = run_retrieval(model, loader, float(model.temperature()), RetrievalOptions(num_clips=clips),
                                   EvalContext.of(engine))
            return {f"val/{k}": v for k, v in result.metrics.items()}
        return evaluate
    return make


def main(argv: list[str] | None = None, description: str = "Pre-train SNP-S3") -> TrainResult:
    args = parse_args(argv, description)
    cfg = cli.load_run_config(args)
    validation = zero_shot_validation(cfg) if cfg.train.eval_every > 0 else None
    return run_training(TrainingJob(cfg, args.ds_config, pretrain_task(cfg), args.engine, args.resume,
                                    validation=validation, recipe=args.config))
