"""Reading a DeepSpeed JSON and checking it against the recipe, without importing deepspeed.

The ds_config owns precision, ZeRO stage, micro-batch, accumulation and clipping; the loader and the
plain-torch engine read those values from here, so there is one place where they are set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snps3_ds.config import ConfigError, OptimConfig, TrainConfig


@dataclass(frozen=True)
class EngineSettings:
    """The ds_config values the rest of the system needs."""

    path: str
    raw: dict[str, Any]
    micro_batch_size: int
    grad_accum: int
    precision: str  # "bf16" | "fp16" | "fp32"
    gradient_clipping: float
    zero_stage: int
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states and step on the CPU

    def global_batch_size(self, world_size: int) -> int:
        return self.micro_batch_size * self.grad_accum * world_size


def load_ds_config(path: str | Path) -> EngineSettings:
    """Parse a ds_config JSON; every problem names the file and the key."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"ds_config not found: {file}")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file}: not valid JSON ({err})") from err
    micro = _positive_int(raw, "train_micro_batch_size_per_gpu", file, required=True)
    accum = _positive_int(raw, "gradient_accumulation_steps", file, required=False) or 1
    if "train_batch_size" in raw:
        raise ConfigError(f"{file}: remove train_batch_size; it is derived as micro x accumulation x world size")
    bf16 = bool(raw.get("bf16", {}).get("enabled", False))
    fp16 = bool(raw.get("fp16", {}).get("enabled", False))
    if bf16 and fp16:
        raise ConfigError(f"{file}: bf16.enabled and fp16.enabled are both true; choose one")
    clip = raw.get("gradient_clipping", 0.0)
    if not isinstance(clip, (int, float)) or clip < 0:
        raise ConfigError(f"{file}: gradient_clipping: expected a number >= 0, got {clip!r}")
    zero = raw.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{file}: zero_optimization.stage: expected 0, 1, 2 or 3, got {stage!r}")
    offload = zero.get("offload_optimizer", {}).get("device", "none") not in ("none", None)
    if offload and stage == 0:
        raise ConfigError(f"{file}: zero_optimization.offload_optimizer needs ZeRO stage 1 or more")
    if fp16 and "loss_scale" in raw["fp16"] and raw["fp16"]["loss_scale"] != 0:
        print(f"{file}: fp16.loss_scale is {raw['fp16']['loss_scale']}: a static scale (0 means dynamic)", flush=True)
    return EngineSettings(str(file), raw, micro, accum, "bf16" if bf16 else "fp16" if fp16 else "fp32",
                          float(clip), int(stage), offload)


def _positive_int(raw: dict[str, Any], key: str, file: Path, required: bool) -> int | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{file}: {key}: expected a positive integer, got {value!r}")
    return value


def check_against_recipe(settings: EngineSettings, train: TrainConfig, world_size: int) -> None:
    """The recipe may pin the micro and global batch; a ds_config that disagrees is an error."""
    if train.micro_batch_size is not None and train.micro_batch_size != settings.micro_batch_size:
        raise ConfigError(f"{settings.path}: train_micro_batch_size_per_gpu is {settings.micro_batch_size} but the "
                          f"recipe's train.micro_batch_size is {train.micro_batch_size}; make them agree")
    total = settings.global_batch_size(world_size)
    if train.global_batch_size is not None and train.global_batch_size != total:
        raise ConfigError(f"{settings.path}: micro {settings.micro_batch_size} x accumulation {settings.grad_accum} x "
                          f"world {world_size} = {total}, but the recipe's train.global_batch_size is "
                          f"{train.global_batch_size}")


_OPTIMIZER_TYPES = {"adam": "adamw", "adamw": "adamw", "lamb": "lamb", "fusedlamb": "lamb", "onebitlamb": "lamb"}


def check_optimizer_block(settings: EngineSettings, optim: OptimConfig, recipe: str) -> None:
    """The recipe builds the optimiser (its parameter groups and learning rates); a ds_config `optimizer` or
    `scheduler` block that says something else is an error naming both, one that agrees is redundant."""
    if "scheduler" in settings.raw:
        raise ConfigError(f"{settings.path}: remove the `scheduler` block; the schedule is the recipe's "
                          f"(optim.schedule, optim.warmup_steps in {recipe})")
    block = settings.raw.get("optimizer")
    if block is None:
        return
    kind = str(block.get("type", "")).lower()
    params = block.get("params", {})
    wanted = {"type": (_OPTIMIZER_TYPES.get(kind, kind), optim.name), "lr": (params.get("lr"), optim.lr),
              "betas": (params.get("betas"), list(optim.betas)), "eps": (params.get("eps"), optim.eps),
              "weight_decay": (params.get("weight_decay"), optim.weight_decay)}
    differ = {key: pair for key, pair in wanted.items() if pair[0] is not None and pair[0] != pair[1]}
    if differ:
        detail = "; ".join(f"optimizer.{'params.' if key != 'type' else ''}{key} is {mine!r} but the recipe's "
                           f"optim.{'name' if key == 'type' else key} is {theirs!r}"
                           for key, (mine, theirs) in differ.items())
        raise ConfigError(f"{settings.path} and {recipe} disagree on the optimiser: {detail}. The recipe builds it; "
                          f"remove the ds_config's optimizer block or make them agree")
