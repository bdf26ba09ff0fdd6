"""Evaluate text-video retrieval (dual-encoder similarity) on the held-out split.

    python launch/evaluate.py --config RECIPE --checkpoint RUN_DIR/checkpoints [--out results.json]
    python launch/evaluate.py --config RECIPE --out before.json            # the untrained model
    python launch/evaluate.py ... --baseline before.json                   # print both side by side
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import _setup  # noqa: F401  (import path)
import torch

from snps3_ds.data.loader import build_eval_loader
from snps3_ds.engine.base import share_cpu_threads
from snps3_ds.engine.checkpoint import load_model_weights
from snps3_ds.evaluation.retrieval import evaluate_retrieval
from snps3_ds.models.factory import build_model, build_tokenizer

ORDER = ["t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MdR", "t2v/MnR", "v2t/R@1", "v2t/R@5", "v2t/R@10", "v2t/MdR", "v2t/MnR"]


def parse_args(argv: list[str] | None = None):
    parser = _setup.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint folder (with `latest`) or one tag folder; "
                                             "omit to evaluate the untrained model")
    parser.add_argument("--out", help="write the metrics here as JSON")
    parser.add_argument("--baseline", help="a JSON written earlier by --out, printed beside these results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    cfg = _setup.load_run_config(args)
    share_cpu_threads(1)
    _setup.ensure_demo_data(cfg)
    torch.manual_seed(cfg.train.seed)  # the untrained model is the one pre-training starts from
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer)
    if args.checkpoint:
        load_model_weights(model, args.checkpoint)
    clips = cfg.eval.num_clips or cfg.data.num_clips
    loader = build_eval_loader(cfg.data, tokenizer, cfg.eval.batch_size, clips)
    metrics = evaluate_retrieval(model, loader, float(model.temperature()))  # the learned one, if learned
    metrics["chance_R@1"] = 100.0 / metrics["num_videos"]
    label = "trained" if args.checkpoint else "untrained"
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    print(format_table(metrics, label, baseline), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "metrics": metrics}, indent=2))
    return metrics


def format_table(metrics: dict[str, float], label: str, baseline: dict | None) -> str:
    columns = [("before", baseline["metrics"])] if baseline else []
    columns.append(("after" if baseline else label, metrics))
    lines = [f"{'metric':<12}" + "".join(f"{name:>12}" for name, _ in columns)]
    for key in ORDER:
        lines.append(f"{key:<12}" + "".join(f"{values[key]:>12.2f}" for _, values in columns))
    lines.append(f"{int(metrics['num_videos'])} test videos, {int(metrics['num_texts'])} captions; "
                 f"chance R@1 = {metrics['chance_R@1']:.2f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
    sys.exit(0)
