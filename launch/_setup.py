"""Shared start-up for the launch scripts: import path, CLI, config, demo corpus on demand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # scripts run as files: make `snps3_ds` and `data_prep` importable
    sys.path.insert(0, str(ROOT))

from snps3_ds.config import DataConfig, MaskingConfig, RunConfig, load_config  # noqa: E402

DEFAULT_RECIPE = ROOT / "launch" / "recipes" / "demo.yaml"
DEFAULT_DS_CONFIG = ROOT / "ds_configs" / "zero2.json"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=str(DEFAULT_RECIPE), help="recipe YAML (default: the demo recipe)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-4 train.max_steps=10")
    return parser


def load_run_config(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)


def ensure_demo_data(cfg: RunConfig) -> None:
    """The demo recipe's corpus, significant-word table and task files, built when missing (rank 0 only)."""
    ensure_demo_corpus(cfg.data)
    ensure_demo_significance(cfg.data, cfg.masking)
    ensure_demo_tasks(cfg)


def ensure_demo_tasks(cfg: RunConfig) -> None:
    """Write the demo corpus's task annotations when a demo recipe names missing ones in <corpus>/tasks/."""
    wanted = [p for p in [cfg.task.train_annotation, *cfg.task.eval_annotations] if p]
    if not (cfg.data.make_demo_if_missing and wanted) or all(Path(p).is_file() for p in wanted):
        return
    folders = {Path(p).parent for p in wanted}
    if len(folders) != 1 or next(iter(folders)).name != "tasks":
        raise ValueError(f"data.make_demo_if_missing: demo task files must sit in one <corpus>/tasks folder, "
                         f"got {sorted(map(str, folders))}")
    from data_prep.demo_tasks import make_demo_tasks

    corpus = next(iter(folders)).parent
    print(f"writing the demo task annotations in {corpus / 'tasks'} ...", flush=True)
    make_demo_tasks(corpus)


def ensure_demo_significance(data: DataConfig, masking: MaskingConfig) -> None:
    """Mine the significance table from the training shards when the demo recipe names a missing one."""
    if not (data.make_demo_if_missing and masking.significance_dir):
        return
    from data_prep.mine_significant_words import DEFAULT_ABANDON, ensure_table

    # As the reference does for WebVid, "background(s)" is abandoned: it is in most demo captions
    # and names no object to ground.
    ensure_table(data.train_shards, masking.significance_dir, workers=1, progress=False,
                 abandon=(*DEFAULT_ABANDON, "background", "backgrounds"))


def ensure_demo_corpus(data: DataConfig) -> None:
    """Build the demo corpus when the recipe asks for it and its shard indexes are missing.

    Call on one process only (rank 0) and barrier afterwards.
    """
    if not data.make_demo_if_missing:
        return
    specs = [*data.train_shards, *data.eval_shards]
    indexes = [Path(s if s.endswith(".shards.json") else s + ".shards.json") for s in specs]
    if all(p.is_file() for p in indexes):
        return
    folders = {p.parent for p in indexes}
    if len(folders) != 1:
        raise ValueError(f"data.make_demo_if_missing: shards must share one folder, got {sorted(map(str, folders))}")
    from data_prep.make_demo_corpus import make_demo_corpus

    out = folders.pop()
    print(f"building the demo corpus in {out} ...", flush=True)
    make_demo_corpus(out, train=2000, test=200)
