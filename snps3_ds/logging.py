"""Run logging on rank 0: a line to stdout, a row to run_dir/metrics.jsonl, and W&B when enabled.

W&B's mode comes from the recipe or WANDB_MODE (online | offline | disabled, default disabled);
wandb is imported only when it is actually used.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from snps3_ds.config import LoggingConfig


class RunLogger:
    def __init__(self, run_dir: Path, cfg: LoggingConfig, config: dict[str, Any], enabled: bool) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.run_dir / "metrics.jsonl").open("a")
        mode = cfg.wandb_mode or os.environ.get("WANDB_MODE", "disabled")
        if mode != "disabled":
            import wandb

            self._wandb = wandb.init(project=cfg.project, name=cfg.run_name or self.run_dir.name, tags=cfg.tags,
                                     config=config, dir=str(self.run_dir), mode=mode)

    def log(self, step: int, row: dict[str, float], echo: bool = True) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **row}) + "\n")
        self._jsonl.flush()
        if self._wandb is not None:
            self._wandb.log(row, step=step)
        if echo:  # the console gets the headline figures; metrics.jsonl and W&B get every key
            shown = {k: v for k, v in row.items() if not any(part in k for part in _CONSOLE_SKIPS)}
            print(f"step {step}: " + "  ".join(f"{k} {_short(v)}" for k, v in shown.items()), flush=True)

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            if self._wandb is not None:
                self._wandb.finish()


_CONSOLE_SKIPS = ("_no_decay", "R@5", "R@10", "MdR", "data/skipped_")


def _short(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
