"""The optimiser (AdamW or LAMB) over {visual, text, head} x {decay, no decay} groups, learning rates
scaled for the global batch, and the learning-rate schedule, counted in optimiser steps."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from snps3_ds.config import OptimConfig


def param_groups(module: nn.Module, cfg: OptimConfig, visual_names: set[str]) -> list[dict]:
    """{visual, text, head} x {decay, no decay}; biases, norms and 1-d tensors get no decay."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        head = any(name.startswith(prefix) for prefix in cfg.head_params)
        kind = "head" if head else "visual" if name in visual_names else "text"
        decay = param.ndim > 1 and "norm" not in name.lower()
        groups.setdefault((kind, decay), []).append(param)
    rates = {"visual": cfg.visual_lr, "text": cfg.lr, "head": cfg.head_lr if cfg.head_lr is not None else cfg.lr}
    return [{"params": params, "lr": rates[kind], "weight_decay": cfg.weight_decay if decay else 0.0,
             "name": f"{kind}{'' if decay else '_no_decay'}"}
            for (kind, decay), params in sorted(groups.items())]


def build_optimizer(module: nn.Module, cfg: OptimConfig, visual_names: set[str]) -> torch.optim.Optimizer:
    groups = param_groups(module, cfg, visual_names)
    if cfg.name == "lamb":
        from timm.optim import Lamb

        # max_grad_norm=None: the engine clips (ds_config gradient_clipping); LAMB must not clip a second time
        return Lamb(groups, betas=cfg.betas, eps=cfg.eps, max_grad_norm=None)
    return torch.optim.AdamW(groups, betas=cfg.betas, eps=cfg.eps)


def for_global_batch(cfg: OptimConfig, global_batch: int) -> tuple[OptimConfig, str]:
    """The recipe's optimiser settings for this run's global batch (lr_scaling, warmup_samples), and a line
    that says what was done."""
    ratio = global_batch / cfg.reference_batch
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[cfg.lr_scaling]
    warmup = math.ceil(cfg.warmup_samples / global_batch) if cfg.warmup_samples else cfg.warmup_steps
    scaled = dataclasses.replace(cfg, lr=cfg.lr * factor, visual_lr=cfg.visual_lr * factor, warmup_steps=warmup,
                                 head_lr=cfg.head_lr * factor if cfg.head_lr is not None else None)
    rates = f"lr {scaled.lr:.3g}, visual_lr {scaled.visual_lr:.3g}" + (
        f", head_lr {scaled.head_lr:.3g}" if scaled.head_lr is not None else "")
    how = "" if cfg.lr_scaling == "none" else f" ({cfg.lr_scaling} scaling x{factor:.3g}: global batch " \
                                                f"{global_batch} vs reference {cfg.reference_batch})"
    warm = f"; warm-up {warmup} steps" + (f" (= {cfg.warmup_samples} samples)" if cfg.warmup_samples else "")
    return scaled, f"optimiser {cfg.name}: {rates}{how}{warm}"


def lr_lambda(cfg: OptimConfig, max_steps: int):
    """Multiplier of each group's peak lr at optimiser step s: linear warm-up, then cosine, constant or step."""
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return cfg.warmup_start + (1 - cfg.warmup_start) * (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":  # the reference's lr_steps: x decay_factor at each milestone passed
            return cfg.decay_factor ** sum(step >= milestone for milestone in cfg.decay_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, max_steps))
