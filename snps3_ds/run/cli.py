"""Command-line pieces every entry point shares: recipe + dotted overrides, and the training flags.

Defaults point into this checkout (the demo recipe, ds_configs/zero2.json), which is where the launch
scripts run from; an installed copy without a checkout passes --config and --ds_config explicitly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from snps3_ds.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO / "launch" / "recipes" / "demo.yaml"
DEFAULT_DS_CONFIG = REPO / "ds_configs" / "zero2.json"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=str(DEFAULT_RECIPE), help="recipe YAML (default: the demo recipe)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-4 train.max_steps=10")
    return parser


def add_training_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ds_config", default=str(DEFAULT_DS_CONFIG), help="DeepSpeed JSON (strategy)")
    parser.add_argument("--engine", choices=["deepspeed", "torch"], default="deepspeed")
    parser.add_argument("--resume", default=None,
                        help="'auto': the newest complete checkpoint in RUN_DIR/checkpoints (a fresh start when "
                             "there is none); or a tag such as step_00000100")
    parser.add_argument("--local_rank", type=int, default=0, help="set by the deepspeed launcher")


def load_run_config(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)
