"""Pre-train SNP-S3 with DeepSpeed (or the plain-torch engine), from one CPU process to many nodes.

    deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero2.json [--config RECIPE] [a.b=value ...]
    deepspeed --hostfile hosts launch/pretrain.py --ds_config ds_configs/zero2.json --config RECIPE --resume auto
    python launch/pretrain.py --engine torch --config RECIPE train.max_steps=10
"""

from __future__ import annotations

import _setup  # noqa: F401  (import path)
from _training import add_training_args, exit_with, run_training

from snps3_ds.config import RunConfig
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


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cfg = _setup.load_run_config(args)
    return run_training(args, cfg, pretrain_task(cfg))


if __name__ == "__main__":
    exit_with(main())
