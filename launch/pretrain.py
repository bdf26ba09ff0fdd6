"""Pre-train SNP-S3 with DeepSpeed (or the plain-torch engine), from one CPU process to many nodes.

    deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero2.json [--config RECIPE] [a.b=value ...]
    deepspeed --hostfile hosts launch/pretrain.py --ds_config ds_configs/zero2.json --config RECIPE --resume auto
    python launch/pretrain.py --engine torch --config RECIPE train.max_steps=10
"""

from __future__ import annotations

import _setup  # noqa: F401  (import path)
from _training import Processes, add_training_args, exit_with, run_training

from snps3_ds.config import RunConfig
from snps3_ds.data.loader import build_eval_loader
from snps3_ds.evaluation.retrieval import RetrievalOptions, run_retrieval
from snps3_ds.data.text import SpecialIds
from snps3_ds.tasks.attentive import AttentiveMasking
from snps3_ds.tasks.pretrain import PretrainTask


def parse_args(argv: list[str] | None = None):
    parser = _setup.base_parser(__doc__.splitlines()[0])
    add_training_args(parser)
    return parser.parse_args(argv)


def pretrain_task(cfg: RunConfig):
    def build(model, tokenizer, rank: int, world: int) -> PretrainTask:
        attentive = None
        if cfg.masking.attentive_probability > 0:
            attentive = AttentiveMasking(cfg.masking.attentive_probability, cfg.masking.probability,
                                         SpecialIds.from_tokenizer(tokenizer), cfg.train.seed, rank)
        return PretrainTask(model, cfg.objectives, cfg.model, rank, world, attentive)
    return build


def zero_shot_validation(cfg: RunConfig):
    """Zero-shot retrieval on data.eval_shards as `val/...` (every train.eval_every steps and at the end)."""
    def make(engine, tokenizer, procs: Processes):
        clips = cfg.eval.num_clips or cfg.data.num_clips
        loader = build_eval_loader(cfg.data, tokenizer, cfg.eval.batch_size, clips)

        def evaluate(step: int) -> dict[str, float]:
            model = engine.module.model
            result = run_retrieval(model, loader, float(model.temperature()), RetrievalOptions(num_clips=clips),
                                   engine.device, procs.rank, procs.world, engine.frames_dtype)
            return {f"val/{k}": v for k, v in result.metrics.items()}
        return evaluate
    return make


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cfg = _setup.load_run_config(args)
    validation = zero_shot_validation(cfg) if cfg.train.eval_every > 0 else None
    return run_training(args, cfg, pretrain_task(cfg), validation=validation)


if __name__ == "__main__":
    exit_with(main())
