"""The DeepSpeed adapter: the only module that imports deepspeed.

It builds the optimiser and schedule (recipe) and hands them with the ds_config (strategy) to
deepspeed.initialize; ZeRO, precision, accumulation and clipping are then DeepSpeed's. Checkpoints carry
DeepSpeed's universal-checkpoint marker, so a ZeRO checkpoint can be converted (`convert_to_universal`)
and loaded on another number of ranks (`load_universal`, with `checkpoint.load_universal` in the config).
DeepSpeed reads its files with full pickle; every such read here (resume, universal conversion, fp32
consolidation) runs inside `plain_loads_only`, which makes it weights-only with DeepSpeed's few plain classes
allowed (`plain_types`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import torch
from torch import nn

from snps3_ds.config import ConfigError, OptimConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.engine.ds_config import EngineSettings
from snps3_ds.engine.optim import build_optimizer, build_scheduler, param_groups
from snps3_ds.engine.safe_load import plain_loads_only
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
        self.audit_dir: Path | None = None  # when set: Adam moments written at every save and load (see audit)

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
        """Collective: every rank writes its ZeRO partition; DeepSpeed writes save_dir/latest. The universal-
        checkpoint marker lets ds_to_universal re-partition the optimiser state for another world size."""
        from deepspeed.checkpoint import UNIVERSAL_CHECKPOINT_INFO
        from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_VERSION_KEY, UNIVERSAL_CHECKPOINT_VERSION_VALUE

        marker = {UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}
        self.engine.save_checkpoint(str(save_dir), tag=tag, client_state={**client_state, **marker})
        self._audit(tag, "saved")

    def load(self, save_dir: Path, tag: str) -> dict[str, Any]:
        """Collective: weights, optimizer partitions, scheduler and DeepSpeed's counters; returns the client state."""
        with plain_loads_only(Path(save_dir) / tag, plain_types()):
            path, client_state = self.engine.load_checkpoint(str(save_dir), tag=tag, load_optimizer_states=True,
                                                             load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"DeepSpeed could not load checkpoint {save_dir}/{tag}")
        self._audit(tag, "loaded")
        return client_state or {}

    def load_universal(self, tag_folder: Path) -> dict[str, Any]:
        """Collective: a checkpoint written by another number of ranks, from its universal form
        (TAG/universal, see convert_to_universal): weights, Adam moments and step counts re-partitioned for
        this world, scheduler and counters. Needs `checkpoint.load_universal: true` in the ds_config."""
        if not self.engine.load_universal_checkpoint():
            raise RuntimeError("load_universal needs checkpoint.load_universal=true in the ds_config given to "
                               "deepspeed.initialize")
        with plain_loads_only(Path(tag_folder) / UNIVERSAL, plain_types()):
            path, client_state = self.engine.load_checkpoint(str(tag_folder), tag=UNIVERSAL,
                                                             load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"DeepSpeed could not load the universal checkpoint {tag_folder / UNIVERSAL}")
        self._audit(Path(tag_folder).name, "loaded")
        return client_state or {}

    def optimizer_moments(self) -> dict[str, Any]:
        """Collective: every parameter's full fp32 master copy and Adam moments, and the step count of each
        optimiser group, gathered from the ZeRO partitions (an audit of what a checkpoint carries)."""
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        self._link_optimizer_fragments()
        moments = {}
        for name, param in self.engine.module.named_parameters():
            if param.requires_grad:
                moments[name] = {"fp32": safe_get_full_fp32_param(param),
                                 **{key: safe_get_full_optimizer_state(param, key) for key in ("exp_avg", "exp_avg_sq")}}
        base = getattr(self.optimizer, "optimizer", self.optimizer)
        steps = [float(base.state[g["params"][0]].get("step", 0)) for g in base.param_groups
                 if g["params"] and g["params"][0] in base.state]
        return {"params": {n: {k: v.detach().cpu() for k, v in m.items() if v is not None} for n, m in moments.items()},
                "steps": steps, "global_steps": int(self.engine.global_steps)}

    def _link_optimizer_fragments(self) -> None:
        """ZeRO-1/2 links each parameter to its slice of the Adam state right after the first optimiser group
        stepped, when a torch optimizer has no state yet for the other groups, so their slices stay empty and
        safe_get_full_optimizer_state fails ('exp_avg not found'); link every group again from its state now."""
        from deepspeed.utils import lazy_init_hp_params_optimizer_state

        zero = self.optimizer
        if not (hasattr(zero, "bit16_groups") and hasattr(zero, "single_partition_of_fp32_groups")):
            return
        for i, flat in enumerate(zero.single_partition_of_fp32_groups):
            if zero.optimizer.state.get(flat):
                lazy_init_hp_params_optimizer_state(zero.bit16_groups[i], flat, zero.optimizer.state)

    def _audit(self, tag: str, event: str) -> None:
        """With audit_dir set (train.audit_optimizer_state): rank 0 writes the gathered moments of this save or
        load as AUDIT/TAG_EVENT_worldW.pt, so a test can compare what was saved with what a resume restored."""
        if self.audit_dir is None:
            return
        moments = self.optimizer_moments()
        if self.rank == 0:
            self.audit_dir.mkdir(parents=True, exist_ok=True)
            torch.save(moments, self.audit_dir / f"{tag}_{event}_world{self.world_size}.pt")


UNIVERSAL = "universal"  # the universal form of a checkpoint lives in TAG/universal


def convert_to_universal(tag_folder: Path) -> Path:
    """TAG/universal from the ZeRO checkpoint in TAG (DeepSpeed's ds_to_universal), once: an existing one is
    kept. One process (rank 0); written under a temporary name and renamed, so a crash leaves no half copy."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    out = Path(tag_folder) / UNIVERSAL
    if out.is_dir():
        return out
    tmp = Path(tag_folder) / f"{UNIVERSAL}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with plain_loads_only(tag_folder, plain_types()):  # one worker each: the reads stay in this process
        ds_to_universal(SimpleNamespace(input_folder=str(tag_folder), output_folder=str(tmp), num_extract_workers=1,
                                        num_merge_workers=1, keep_temp_folder=False, strict=True,
                                        inject_missing_state=True))  # checkpoints written before the marker
    os.replace(tmp, out)
    return out


def _offload_adam(task: nn.Module, optim: OptimConfig, visual_names: set[str]) -> torch.optim.Optimizer:
    """ZeRO-Offload steps the optimizer on the CPU, which needs DeepSpeed's vectorised CPU AdamW
    (a torch optimizer there is refused); same groups, learning rates and decay as build_optimizer."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    if optim.name != "adamw":
        raise ConfigError(f"zero_optimization.offload_optimizer steps DeepSpeed's CPU Adam; optim.name={optim.name} "
                          f"cannot be offloaded: use optim.name=adamw or a ds_config without offload")
    return DeepSpeedCPUAdam(param_groups(task, optim, visual_names), betas=optim.betas, eps=optim.eps,
                            adamw_mode=True)


def plain_types() -> list[type]:
    """The classes besides tensors and containers that DeepSpeed 0.19 pickles into its checkpoints, each a
    holder of numbers: the loss scaler (static; dynamic under fp16), the ZeRO stage (an int enum) and a
    fragment's (start, numel). Found with torch.serialization.get_unsafe_globals_in_checkpoint on ZeRO-1/2/3
    fp32, bf16 and optimizer-offload checkpoints and their universal form (DynamicLossScaler from the source:
    fp16 needs a GPU)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def fp32_state_dict_from_zero_checkpoint(checkpoint_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    """Consolidated fp32 weights from a ZeRO checkpoint (the fp32 master copies, not the bf16 module), by
    DeepSpeed's own zero_to_fp32 (every stage and layout it knows), its reads made weights-only."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with plain_loads_only(Path(checkpoint_dir) / tag, plain_types()):
        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
