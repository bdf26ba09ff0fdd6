"""A plain-PyTorch engine with the DeepSpeed engine's methods, for one process: debugging and fast tests.

It reads the same ds_config (micro-batch, accumulation, clipping, precision) so both engines train the
same run; it does not implement ZeRO or multi-process training.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snps3_ds.config import ConfigError, OptimConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.engine.ds_config import EngineSettings
from snps3_ds.engine.optim import build_optimizer, build_scheduler
from snps3_ds.tasks.base import TaskOutput


class TorchEngine:
    def __init__(self, task: nn.Module, settings: EngineSettings, optim: OptimConfig, max_steps: int,
                 visual_names: set[str]) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("the torch engine runs one process; use --engine deepspeed for several ranks")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if settings.precision == "fp16" and self.device.type == "cpu":
            raise ConfigError(f"{settings.path}: fp16 needs a GPU; use bf16 or fp32 on the CPU")
        self.module = task.to(self.device)
        self.frames_dtype = None  # autocast decides compute precision; inputs stay fp32
        self.settings = settings
        self.rank, self.world_size = 0, 1
        self.micro_batch_size, self.grad_accum = settings.micro_batch_size, settings.grad_accum
        self.optimizer = build_optimizer(task, optim, visual_names)
        self.scheduler = build_scheduler(self.optimizer, optim, max_steps)
        self._micro = 0
        self._grad_norm: float | None = None

    def _autocast(self):
        if self.settings.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.settings.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, batch: VideoTextBatch) -> TaskOutput:
        self.module.train()
        with self._autocast():
            return self.module(batch.to(self.device))

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> bool:
        self._micro += 1
        if self._micro % self.grad_accum:
            return False
        clip = self.settings.gradient_clipping if self.settings.gradient_clipping > 0 else float("inf")
        self._grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return True

    def learning_rates(self) -> dict[str, float]:
        return {group.get("name", str(i)): group["lr"] for i, group in enumerate(self.optimizer.param_groups)}

    def grad_norm(self) -> float | None:
        return self._grad_norm

    def loss_scale(self) -> float | None:
        return None

    def overflow_steps(self) -> int:
        return 0

    def load(self, save_dir: Path, tag: str) -> dict[str, Any]:
        state = torch.load(Path(save_dir) / tag / "model_states.pt", map_location=self.device, weights_only=False)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._micro = 0
        return state["client_state"]

    def save(self, save_dir: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Same layout as DeepSpeed: save_dir/tag/... and save_dir/latest naming the newest tag."""
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "client_state": client_state},
                   folder / "model_states.pt")
        (Path(save_dir) / "latest").write_text(tag)
