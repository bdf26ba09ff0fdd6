"""The benchmark command line (launch/benchmark.py): benchmarks that print figures (DESIGN §6), not timed tests.

    python launch/benchmark.py data --shards OUT_PREFIX [--decoder decord|dali|auto|pyav] [--workers 2]
        [--batch-size 16] [--num-clips 4] [--image-size 224] [--batches 30] [--source-dir DIR]
    python launch/benchmark.py train [--config RECIPE] [--ds_config BASE] [--steps 10] [--warmup 2]
        [--modes ddp,zero1,zero2,zero2_offload] [--world 2] [--micro N] [--data synthetic|loader]
        [--accum 1,2,4,8] [--negatives step,micro] [--out results.json] [a.b=value ...]

`data`: the training loader against plain seeking/sequential decoding and per-file reads
(snps3_ds/perf/data_benchmark.py says what each baseline is). `train`: the training step under DDP and
DeepSpeed ZeRO-1/2/offload, and accumulation with global (`step`) vs per-micro-batch (`micro`) negatives
(snps3_ds/perf/train_benchmark.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from snps3_ds.demo.ensure import ensure_demo_data
from snps3_ds.perf.data_benchmark import run_data
from snps3_ds.run import cli


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """The `train` sub-command: options from the command line, the machinery in snps3_ds.perf."""
    from snps3_ds.perf.train_benchmark import BenchOptions, run_benchmark

    cfg = cli.load_run_config(args)  # a bad recipe or override fails here, before any rank starts
    if args.data == "loader":
        ensure_demo_data(cfg)
    micro = args.micro or cfg.train.micro_batch_size or json.loads(Path(args.ds_config).read_text()).get(
        "train_micro_batch_size_per_gpu", 1)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_train_")).resolve()
    print(f"train benchmark: logs, ds_configs and per-rank figures in {work_dir}", flush=True)
    results = run_benchmark(BenchOptions(
        str(Path(args.config).resolve()), [*args.overrides, f"train.micro_batch_size={micro}"],
        str(Path(args.ds_config).resolve()), [m.strip() for m in args.modes.split(",") if m.strip()],
        args.world, args.steps, args.warmup, micro, args.data, work_dir, args.timeout,
        accums=[int(a) for a in args.accum.split(",")] if args.accum else [None],
        negatives=[n.strip() for n in args.negatives.split(",")] if args.negatives else [None]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


def add_train_parser(commands: Any) -> None:
    train = commands.add_parser("train", help="training step: DDP vs DeepSpeed ZeRO-1/2/offload, per-rank memory")
    train.add_argument("--config", default=str(cli.DEFAULT_RECIPE), help="recipe YAML (default: the demo recipe)")
    train.add_argument("--ds_config", default=str(cli.DEFAULT_DS_CONFIG),
                       help="base ds_config: precision, clipping, accumulation; each mode sets ZeRO stage/offload")
    train.add_argument("--steps", type=int, default=10, help="timed optimiser steps per mode")
    train.add_argument("--warmup", type=int, default=2, help="untimed optimiser steps first")
    train.add_argument("--modes", default="ddp,zero1,zero2,zero2_offload",
                       help="comma-separated: ddp, zero0..zero3, zeroN_offload")
    train.add_argument("--world", type=int, default=2, help="ranks per mode")
    train.add_argument("--accum", help="comma-separated gradient accumulation steps to measure, e.g. 1,2,4,8 "
                                       "(default: the base ds_config's)")
    train.add_argument("--negatives", help="comma-separated objectives.negatives to measure: step (global "
                                           "negatives, two passes), micro (per micro-batch); default: the recipe's")
    train.add_argument("--micro", type=int, help="micro-batch per rank (default: the recipe's, else the ds_config's)")
    train.add_argument("--data", choices=["synthetic", "loader"], default="synthetic",
                       help="synthetic batches with the recipe's shapes, or one real loader batch per rank")
    train.add_argument("--timeout", type=float, default=900, help="seconds per mode before its ranks are stopped")
    train.add_argument("--work-dir", help="folder for ds_configs, logs, per-rank JSON (default: a new temp folder)")
    train.add_argument("--out", help="write the results as JSON here")
    train.add_argument("overrides", nargs="*", help="dotted recipe overrides, e.g. model.visual_backbone=resnet18")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="loader clips/s against plain decoding and per-file reads")
    data.add_argument("--shards", required=True, help="OUT_PREFIX of build_shards (or any shard spec)")
    data.add_argument("--decoder", default="decord", choices=["auto", "dali", "decord", "pyav"])
    data.add_argument("--workers", type=int, default=2, help="DataLoader workers / DALI threads / limit processes")
    data.add_argument("--batch-size", type=int, default=16)
    data.add_argument("--num-clips", type=int, default=4)
    data.add_argument("--image-size", type=int, default=224)
    data.add_argument("--batches", type=int, default=30, help="timed batches per method")
    data.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    data.add_argument("--source-dir", help="folder for the per-file baseline (default: a temp copy of the media)")
    data.add_argument("--json", help="also write the figures here")
    add_train_parser(commands)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.command == "train":
        return run_train(args)
    results = run_data(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results
