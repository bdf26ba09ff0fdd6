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
            if mode == "offline":  # clusters without internet: no error reports either
                os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
            import wandb

            # One W&B run per run folder: a resumed training continues the same run and its charts.
            self._wandb = wandb.init(project=cfg.project, name=cfg.run_name or self.run_dir.name, tags=cfg.tags,
                                     config=config, dir=str(self.run_dir), mode=mode, id=self._run_id(),
                                     resume="allow")

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

    def _run_id(self) -> str:
        path = self.run_dir / "wandb_run_id"
        if not path.is_file():
            import uuid

            path.write_text(uuid.uuid4().hex[:12])
        return path.read_text().strip()

    def close(self, exit_code: int = 0) -> None:
        """exit_code != 0 marks the W&B run failed (a crash or a stop signal)."""
        if self.enabled:
            self._jsonl.close()
            if self._wandb is not None:
                self._wandb.finish(exit_code=exit_code)


_CONSOLE_SKIPS = ("_no_decay", "R@5", "R@10", "MdR", "data/skipped_")


def _short(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
