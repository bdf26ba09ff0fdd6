"""The DeepSpeed adapter: the only module that imports deepspeed.

It builds the optimiser and schedule (recipe) and hands them with the ds_config (strategy) to
deepspeed.initialize; ZeRO, precision, accumulation and clipping are then DeepSpeed's.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from snps3_ds.config import ConfigError, OptimConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.engine.ds_config import EngineSettings
from snps3_ds.engine.optim import build_optimizer, build_scheduler, param_groups
from snps3_ds.tasks.base import TaskOutput

T = TypeVar("T")


class DeepSpeedEngine:
    def __init__(self, task: nn.Module, settings: EngineSettings, optim: OptimConfig, max_steps: int,
                 visual_names: set[str]) -> None:
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        accelerator = get_accelerator()
        if settings.precision == "fp16" and accelerator.device_name() == "cpu":
            raise ConfigError(f"{settings.path}: DeepSpeed refuses fp16 on the CPU; use a bf16 or fp32 ds_config")
        config = {k: v for k, v in settings.raw.items() if k not in ("optimizer", "scheduler")}  # ours, checked
        config.setdefault("zero_allow_untested_optimizer", True)  # our AdamW/LAMB are torch's/timm's
        optimizer = _offload_adam(task, optim, visual_names) if settings.offload_optimizer else \
            build_optimizer(task, optim, visual_names)
        scheduler = build_scheduler(optimizer, optim, max_steps)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=task, optimizer=optimizer, lr_scheduler=scheduler, config=config)
        self.module = self.engine.module
        self.device = torch.device(accelerator.current_device_name())
        self.frames_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision, torch.float32)
        self.rank, self.world_size = self.engine.global_rank, self.engine.world_size
        self.micro_batch_size = self.engine.train_micro_batch_size_per_gpu()
        self.grad_accum = self.engine.gradient_accumulation_steps()

    def forward(self, batch: VideoTextBatch, **task_kwargs: Any) -> TaskOutput:
        self.engine.train()
        return self.engine(batch.to(self.device, frames_dtype=self.frames_dtype), **task_kwargs)

    def without_grad(self, fn: Callable[[VideoTextBatch], T], batch: VideoTextBatch) -> T:
        """fn(batch) on the training module (train mode: dropout on), batch cast as forward casts it."""
        self.engine.train()
        with torch.no_grad():
            return fn(batch.to(self.device, frames_dtype=self.frames_dtype))

    def set_boundary(self, last: bool) -> None:
        """Mark whether the coming backward ends the optimiser step. ZeRO-2 resets its gradient accumulator
        at a boundary, so a boundary marked on the wrong micro-batch silently drops gradients."""
        self.engine.set_gradient_accumulation_boundary(last)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> bool:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        return boundary

    def learning_rates(self) -> dict[str, float]:
        return {group.get("name", str(i)): group["lr"] for i, group in enumerate(self.optimizer.param_groups)}

    def grad_norm(self) -> float | None:
        """The global gradient norm of the last optimiser step (before clipping), when DeepSpeed computed it."""
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def loss_scale(self) -> float | None:
        """fp16's dynamic loss scale; None in bf16/fp32."""
        return float(self.optimizer.loss_scale) if self.frames_dtype == torch.float16 else None

    def overflow_steps(self) -> int:
        """Optimiser steps DeepSpeed skipped because fp16 gradients overflowed."""
        return int(self.engine.skipped_steps)

    def save(self, save_dir: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Collective: every rank writes its ZeRO partition; DeepSpeed writes save_dir/latest."""
        self.engine.save_checkpoint(str(save_dir), tag=tag, client_state=client_state)

    def load(self, save_dir: Path, tag: str) -> dict[str, Any]:
        """Collective: weights, optimizer partitions, scheduler and DeepSpeed's counters; returns the client state."""
        path, client_state = self.engine.load_checkpoint(str(save_dir), tag=tag, load_optimizer_states=True,
                                                         load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"DeepSpeed could not load checkpoint {save_dir}/{tag}")
        return client_state or {}


def _offload_adam(task: nn.Module, optim: OptimConfig, visual_names: set[str]) -> torch.optim.Optimizer:
    """ZeRO-Offload steps the optimizer on the CPU, which needs DeepSpeed's vectorised CPU AdamW
    (a torch optimizer there is refused); same groups, learning rates and decay as build_optimizer."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    if optim.name != "adamw":
        raise ConfigError(f"zero_optimization.offload_optimizer steps DeepSpeed's CPU Adam; optim.name={optim.name} "
                          f"cannot be offloaded: use optim.name=adamw or a ds_config without offload")
    return DeepSpeedCPUAdam(param_groups(task, optim, visual_names), betas=optim.betas, eps=optim.eps,
                            adamw_mode=True)


def fp32_state_dict_from_zero_checkpoint(checkpoint_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    """Consolidated fp32 weights from a ZeRO checkpoint (the fp32 master copies, not the bf16 module)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
