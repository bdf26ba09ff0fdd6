"""A plain-PyTorch engine with the DeepSpeed engine's methods: one process for debugging and fast tests,
and, with several ranks, torch DistributedDataParallel, the baseline `benchmark.py train` measures ZeRO
against.

It reads the same ds_config (micro-batch, accumulation, clipping, precision as autocast; fp16 adds a
GradScaler) so both engines train the same run; it does not implement ZeRO.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from snps3_ds.config import ConfigError, OptimConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.engine.ds_config import EngineSettings
from snps3_ds.engine.optim import build_optimizer, build_scheduler
from snps3_ds.engine.safe_load import load_plain
from snps3_ds.processes import Processes
from snps3_ds.tasks.base import TaskOutput

T = TypeVar("T")


class _TupleOutput(nn.Module):
    """The task with a (loss, losses, metrics) result: DDP's static-graph hooks only see tensors in
    containers torch's pytree knows, and TaskOutput is a plain dataclass."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: VideoTextBatch, **task_kwargs: Any) -> tuple[torch.Tensor, dict, dict]:
        out = self.task(batch, **task_kwargs)
        return out.loss, out.losses, out.metrics


def _ddp(task: nn.Module, settings: EngineSettings, device: torch.device) -> DistributedDataParallel:
    """The model has parameters no objective reaches (DeepSpeed ignores those), which DDP must be told
    about: static_graph when every micro-step reduces; with accumulation find_unused_parameters, because
    static_graph breaks on no_sync micro-steps (reducer "expect_autograd_hooks_" assertion)."""
    static = settings.grad_accum == 1
    return DistributedDataParallel(_TupleOutput(task), device_ids=[device.index] if device.type == "cuda" else None,
                                   static_graph=static, find_unused_parameters=not static)


class TorchEngine:
    def __init__(self, task: nn.Module, settings: EngineSettings, optim: OptimConfig, max_steps: int,
                 visual_names: set[str], procs: Processes) -> None:
        self.device = procs.device
        if settings.precision == "fp16" and self.device.type == "cpu":
            raise ConfigError(f"{settings.path}: fp16 needs a GPU; use bf16 or fp32 on the CPU")
        self.module = task.to(self.device)
        self.frames_dtype = None  # autocast decides compute precision; inputs stay fp32
        self.settings = settings
        self.rank, self.world_size = procs.rank, procs.world
        self.ddp = _ddp(task, settings, self.device) if procs.world > 1 else None
        self.micro_batch_size, self.grad_accum = settings.micro_batch_size, settings.grad_accum
        self.optimizer = build_optimizer(task, optim, visual_names)
        self.scheduler = build_scheduler(self.optimizer, optim, max_steps)
        self.scaler = torch.amp.GradScaler(self.device.type) if settings.precision == "fp16" else None
        self._last = True  # until the trainer marks boundaries, every micro-batch ends a step (accumulation 1)
        self._grad_norm: float | None = None

    def _autocast(self):
        if self.settings.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.settings.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, batch: VideoTextBatch, **task_kwargs: Any) -> TaskOutput:
        self.module.train()
        batch = batch.to(self.device)
        with self._autocast():
            if self.ddp is None:
                return self.module(batch, **task_kwargs)
            self.ddp.require_backward_grad_sync = self._last  # what no_sync() toggles
            return TaskOutput(*self.ddp(batch, **task_kwargs))

    def without_grad(self, fn: Callable[[VideoTextBatch], T], batch: VideoTextBatch) -> T:
        """fn(batch) on the training module (train mode: dropout on) under the same autocast as forward."""
        self.module.train()
        with torch.no_grad(), self._autocast():
            return fn(batch.to(self.device))

    def set_boundary(self, last: bool) -> None:
        """Whether the coming backward ends the optimiser step (the step then applies the update)."""
        self._last = last

    def backward(self, loss: torch.Tensor) -> None:
        loss = loss / self.grad_accum
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self) -> bool:
        if not self._last:
            return False
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        clip = self.settings.gradient_clipping if self.settings.gradient_clipping > 0 else float("inf")
        self._grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return True

    def learning_rates(self) -> dict[str, float]:
        return {group.get("name", str(i)): group["lr"] for i, group in enumerate(self.optimizer.param_groups)}

    def grad_norm(self) -> float | None:
        return self._grad_norm

    def loss_scale(self) -> float | None:
        return float(self.scaler.get_scale()) if self.scaler else None

    def overflow_steps(self) -> int:
        return 0

    def load(self, save_dir: Path, tag: str) -> dict[str, Any]:
        state = load_plain(Path(save_dir) / tag / "model_states.pt", map_location=self.device)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return state["client_state"]

    def save(self, save_dir: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Same layout as DeepSpeed: save_dir/tag/... and save_dir/latest naming the newest tag. The replicas
        are identical, so rank 0 writes them."""
        if self.rank != 0:
            return
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "client_state": client_state},
                   folder / "model_states.pt")
        (Path(save_dir) / "latest").write_text(tag)
