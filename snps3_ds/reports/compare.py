"""Print several evaluation results side by side (e.g. zero-shot vs fine-tuned).

    python launch/compare_results.py zero-shot=runs/x/zs.json,runs/x/zs_qa.json fine-tuned=runs/ft/eval_final.json \
        [--same zs_=] [--keys 'demo_test/t2v/R@' 'qa/acc']

Reads `launch/evaluate.py --out` files ({"metrics": {...}}) and a run's `eval_final.json` (flat, `val/` keys);
`--same OLD=NEW` renames key parts so that differently named protocols share a row (the zero-shot QA
`zs_acc` against the classifier's `acc`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_metrics(path: Path, renames: list[tuple[str, str]]) -> dict[str, float]:
    data = json.loads(path.read_text())
    metrics = data.get("metrics", data) if isinstance(data, dict) else None
    if not isinstance(metrics, dict):
        raise SystemExit(f"{path}: expected a JSON object of metrics (or one with a 'metrics' key)")
    out = {}
    for key, value in metrics.items():
        if not isinstance(value, (int, float)):
            continue
        key = key.removeprefix("val/")
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = float(value)
    return out


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="LABEL=FILE.json[,FILE.json...] (one column per label)")
    parser.add_argument("--keys", nargs="*", default=[], help="keep metrics whose name contains one of these")
    parser.add_argument("--same", action="append", default=[], help="OLD=NEW rename applied to metric names "
                                                                    "(repeatable)")
    args = parser.parse_args(argv)
    renames = [tuple(item.split("=", 1)) for item in args.same]
    columns = []
    for spec in args.results:
        label, _, file = spec.partition("=")
        if not file:
            raise SystemExit(f"{spec!r}: expected LABEL=FILE.json")
        merged: dict[str, float] = {}
        for one in file.split(","):
            merged.update(load_metrics(Path(one), renames))
        columns.append((label, merged))
    keys = sorted({k for _, m in columns for k in m if not args.keys or any(p in k for p in args.keys)})
    width = max([len(k) for k in keys] + [6])
    lines = [f"{'metric':<{width}}" + "".join(f"{label:>14}" for label, _ in columns)]
    for key in keys:
        cells = "".join(f"{m[key]:>14.2f}" if key in m else f"{'-':>14}" for _, m in columns)
        lines.append(f"{key:<{width}}{cells}")
    table = "\n".join(lines)
    print(table, flush=True)
    return table
