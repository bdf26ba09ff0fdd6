"""The one place an engine is chosen: DeepSpeed (the default), or plain torch (one process, or DDP)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from snps3_ds.config import OptimConfig
from snps3_ds.engine.base import Engine
from snps3_ds.engine.ds_config import EngineSettings
from snps3_ds.processes import Processes

EngineKind = Literal["deepspeed", "torch"]


def make_engine(kind: EngineKind, task: nn.Module, settings: EngineSettings, optim: OptimConfig, max_steps: int,
                visual_names: set[str], procs: Processes) -> Engine:
    """`visual_names` are the task's parameter names that take the visual learning rate."""
    if kind == "torch":
        from snps3_ds.engine.torch_engine import TorchEngine

        return TorchEngine(task, settings, optim, max_steps, visual_names, procs)
    if kind != "deepspeed":
        raise ValueError(f"unknown engine {kind!r}: expected 'deepspeed' or 'torch'")
    from snps3_ds.engine.deepspeed_engine import DeepSpeedEngine

    return DeepSpeedEngine(task, settings, optim, max_steps, visual_names)
