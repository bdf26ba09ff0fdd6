"""The demo corpus command line (data_prep/make_demo_corpus.py): the corpus, its task files, or both.

    python data_prep/make_demo_corpus.py --out data/demo --train 2000 --test 200 --val 200 [--tasks | --tasks-only]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from snps3_ds.demo.corpus import CODECS, FRAME_SIDES, ClipConfig, ShardLayout, make_demo_corpus
from snps3_ds.demo.tasks import format_summary, make_demo_tasks

log = logging.getLogger("make_demo_corpus")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build a small synthetic video-text corpus as WebDataset shards (DESIGN §3.1)",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--train", type=int, default=2000, help="clips in the train split")
    parser.add_argument("--test", type=int, default=200, help="clips in the test split")
    parser.add_argument("--val", type=int, default=200,
                        help="clips in the val split (no recipe trains on it; choices made after training)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--codec", choices=sorted(CODECS), default="h264")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--captions-per-clip", type=int, default=2)
    parser.add_argument("--sides", default=",".join(map(str, FRAME_SIDES)),
                        help="comma-separated frame sides (width and height each drawn from them), even pixels")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shard-size", type=int, default=500, help="clips per shard")
    tasks = parser.add_mutually_exclusive_group()
    tasks.add_argument("--tasks", action="store_true",
                       help="after the corpus, write task annotations to OUT/tasks")
    tasks.add_argument("--tasks-only", action="store_true",
                       help="only write OUT/tasks for the corpus already in --out (no clips are made)")
    return parser.parse_args(argv)


def _write_tasks(out: Path, seed: int) -> dict[str, Any]:
    """Task annotations for the corpus in `out`."""
    try:
        summary = make_demo_tasks(out, seed=seed)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(format_summary(summary))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args_used = sys.argv[1:] if argv is None else argv
    command = " ".join(["python", "data_prep/make_demo_corpus.py", *args_used])
    if args.tasks_only:
        return {"tasks": _write_tasks(args.out, args.seed)}
    try:
        sides = tuple(int(side) for side in args.sides.split(",") if side.strip())
        clips = ClipConfig(args.codec, args.frames, args.fps, args.captions_per_clip, sides)
        summary = make_demo_corpus(args.out, args.train, args.test, seed=args.seed, clips=clips,
                                   workers=args.workers, shards=ShardLayout(args.shard_size, command), val=args.val)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    log.info("done in %.1f s: %s", summary["elapsed_s"],
             ", ".join(f"{k}={v['num_samples']} clips/{v['num_shards']} shards"
                       for k, v in summary["splits"].items()))
    if args.tasks:
        summary["tasks"] = _write_tasks(args.out, args.seed)
    return summary
