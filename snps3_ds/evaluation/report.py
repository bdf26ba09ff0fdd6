"""W&B tables for evaluation results (the worst-ranked retrieval queries, QA/MC mistakes).

RunLogger logs scalar rows; a table is logged here, and only when a W&B run is already active in this
process (started by RunLogger during training, or by start_wandb in launch/evaluate.py). wandb is
imported only when a run may exist.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from snps3_ds.config import LoggingConfig


def active_run() -> Any | None:
    """The current wandb run, or None when wandb was never imported or no run is active."""
    wandb = sys.modules.get("wandb")
    return getattr(wandb, "run", None) if wandb is not None else None


def log_table(key: str, rows: list[dict], step: int | None = None) -> bool:
    """Log `rows` (dicts sharing their keys) as a wandb.Table under `key`; False when nothing was logged."""
    run = active_run()
    if run is None or not rows:
        return False
    import wandb

    columns = list(rows[0])
    table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
    run.log({key: table}, step=step)
    return True


def start_wandb(cfg: LoggingConfig, name: str, config: dict[str, Any]) -> Any | None:
    """A W&B run for a stand-alone evaluation when the recipe or WANDB_MODE enables W&B; else None."""
    mode = cfg.wandb_mode or os.environ.get("WANDB_MODE", "disabled")
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(project=cfg.project, name=name, tags=[*cfg.tags, "eval"], config=config, mode=mode,
                      job_type="eval")
