"""What a stand-alone evaluation prints and writes: the metric table (beside a baseline), the JSON, W&B."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from snps3_ds.config import RunConfig, to_dict
from snps3_ds.evaluation.metrics import metric_key
from snps3_ds.evaluation.report import log_table, start_wandb

ORDER = ["t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MdR", "t2v/MnR", "v2t/R@1", "v2t/R@5", "v2t/R@10", "v2t/MdR", "v2t/MnR"]


def report(args: argparse.Namespace, cfg: RunConfig, task: str, split: str, metrics: dict[str, float],
           extra: dict) -> None:
    """Rank 0: table to stdout, JSON to --out, and W&B (scalars + table) when enabled."""
    label = "trained" if args.checkpoint else "untrained"
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    print(format_table(metrics, label, baseline, table_keys(metrics, task, split)), flush=True)
    if task == "retrieval":
        n_videos, n_texts = metrics[metric_key(split, "num_videos")], metrics[metric_key(split, "num_texts")]
        print(f"{int(n_videos)} test videos, {int(n_texts)} captions; "
              f"chance R@1 = {metrics[metric_key(split, 'chance_R@1')]:.2f}%", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "task": task, "split": split,
                                              "metrics": metrics, **extra}, indent=2))
    run = start_wandb(cfg.logging, f"{cfg.logging.run_name or Path(cfg.train.run_dir).name}-eval-{split or task}",
                      {**to_dict(cfg), "eval": {"task": task, "checkpoint": args.checkpoint}})
    if run is not None:
        run.log(metrics)
        log_table(f"{split or 'eval'}/worst_queries", extra.get("worst", []))
        run.finish()


def table_keys(metrics: dict[str, float], task: str, split: str) -> list[str]:
    if task != "retrieval":
        return [k for k in metrics if not k.endswith("num_questions")]
    clips = next((k.rsplit("@", 1)[1] for k in metrics if k.endswith("clips")), None)
    suffix = f"@{clips}" if clips else ""
    prefix = f"{split}/" if split else ""
    variants = ("", "rerank/", "rerank_joint/", "rerank_weighted/", "fusion/")
    keys = [f"{prefix}{variant}{k}{suffix}" for variant in variants for k in ORDER]
    return [k for k in keys if k in metrics]


def format_table(metrics: dict[str, float], label: str, baseline: dict | None, keys: list[str] = ORDER) -> str:
    columns = [("before", baseline["metrics"])] if baseline else []
    columns.append(("after" if baseline else label, metrics))
    width = max([12] + [len(k) + 2 for k in keys])
    lines = [f"{'metric':<{width}}" + "".join(f"{name:>12}" for name, _ in columns)]
    for key in keys:
        cells = "".join(f"{values[key]:>12.2f}" if key in values else f"{'-':>12}" for _, values in columns)
        lines.append(f"{key:<{width}}" + cells)
    return "\n".join(lines)
