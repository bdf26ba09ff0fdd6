"""Plot a run's curves from RUN_DIR/metrics.jsonl: one small panel per key group, saved as a PNG.

    python launch/plot.py runs/demo                         # -> runs/demo/curves.png
    python launch/plot.py runs/demo --out demo.png --keys 'train/*' 'val/*R@1'

Rows may carry different keys (train rows, validation rows, ...). A resumed run logs steps again from
its checkpoint: a row whose step is below one already read starts the resumed segment, and everything
earlier at that step or later is dropped (the resumed run's values win; steps it has not reached yet
belong to the abandoned run). Bad lines (a run killed mid-write) are skipped and counted.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
from pathlib import Path


Series = dict[str, dict[int, float]]  # key -> step -> value

GROUP_ORDER = ("train losses", "train metrics", "learning rates", "train optimiser", "val", "perf",
               "perf fractions", "data", "system", "other")
_METRIC = re.compile(r"(_acc$|R@\d+|MdR|MnR)")
_OPTIMISER = re.compile(r"(norm|scale|temperature)")
_FRACTION = re.compile(r"(frac|mfu)")  # 0..1 values, kept apart from samples/s so neither scale hides the other


def read_metrics(path: Path) -> Series:
    """Every numeric value by key and step, resumed segments applied; bad lines skipped with a warning."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a run writes metrics.jsonl into its run_dir on rank 0)")
    rows: list[tuple[int, dict]] = []
    bad: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row, problem = _parse_row(line)
        if problem:
            bad.append(f"line {number}: {problem}")
        else:
            rows.append(row)
    if not rows:
        detail = f"; first bad {bad[0]}" if bad else ""
        raise ValueError(f"{path}: no readable rows{detail} (expected one JSON object with an integer 'step' per line)")
    if bad:
        print(f"warning: {path}: skipped {len(bad)} bad line(s); first: {bad[0]}", file=sys.stderr)
    return merge_rows(rows)


def _parse_row(line: str) -> tuple[tuple[int, dict] | None, str | None]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"not JSON ({err.msg})"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    step = row.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        return None, f"'step' must be an integer, got {step!r}"
    return (step, row), None


def merge_rows(rows: list[tuple[int, dict]]) -> Series:
    """Rows in file order -> series. A step below the highest seen so far starts a resumed segment."""
    series: Series = {}
    highest = None
    for step, row in rows:
        if highest is not None and step < highest:
            for values in series.values():
                for old in [s for s in values if s >= step]:
                    del values[old]
        highest = step if highest is None else max(highest, step)
        for key, value in row.items():
            if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            series.setdefault(key, {})[step] = float(value) if math.isfinite(value) else math.nan
    return {key: values for key, values in series.items() if values}


def group_of(key: str) -> str:
    """The panel a key is drawn in, by its prefix (train/, val/, perf/, data/, system/)."""
    prefix, _, name = key.partition("/")
    if prefix == "perf" and _FRACTION.search(name):
        return "perf fractions"
    if prefix != "train":
        return prefix if prefix in ("val", "perf", "data", "system") else "other"
    if name.startswith("lr_"):
        return "learning rates"
    if _METRIC.search(name):
        return "train metrics"
    return "train optimiser" if _OPTIMISER.search(name) else "train losses"


def select(series: Series, patterns: list[str] | None) -> Series:
    """Keys matching any glob pattern (all keys when none are given)."""
    if not patterns:
        return series
    chosen = {k: v for k, v in series.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    if not chosen:
        raise ValueError(f"--keys {' '.join(patterns)}: no key matches; keys in the file: {', '.join(sorted(series))}")
    return chosen


def draw(series: Series, out: Path, title: str) -> Path:
    """One panel per group, steps on x; a series with few points gets markers (validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[str]] = {}
    for key in sorted(series):
        groups.setdefault(group_of(key), []).append(key)
    names = [g for g in GROUP_ORDER if g in groups]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for key in groups[name]:
            steps = sorted(series[key])
            ax.plot(steps, [series[key][s] for s in steps], marker="o" if len(steps) <= 20 else None,
                    markersize=3, linewidth=1, label=key.split("/", 1)[-1])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run folder holding metrics.jsonl")
    parser.add_argument("--out", help="PNG to write (default: RUN_DIR/curves.png)")
    parser.add_argument("--keys", nargs="+", metavar="PATTERN", help="only keys matching these globs, e.g. 'train/*'")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        series = select(read_metrics(run_dir / "metrics.jsonl"), args.keys)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"plot: {err}")
    out = draw(series, Path(args.out) if args.out else run_dir / "curves.png", str(run_dir))
    print(out)
    return out
