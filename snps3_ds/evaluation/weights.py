"""Weights for evaluation: from a training checkpoint folder or from a safetensors export.

    checkpoint folder  a run's checkpoints/ (with `latest`) or one tag folder (engine.checkpoint)
    export             a .safetensors file, or a folder holding model.safetensors (launch/export.py)

Both hold the task module's keys (`model.bert...`, and for QA `head...`); `load_weights` takes the part
under one prefix and insists that it fits the module exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from snps3_ds.engine.checkpoint import load_task_state

EXPORT_FILE = "model.safetensors"


def read_task_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The task's state dict (CPU) from a checkpoint folder or a safetensors export."""
    path = Path(path)
    export = path if path.suffix == ".safetensors" else path / EXPORT_FILE
    if export.is_file():
        from safetensors.torch import load_file

        return load_file(str(export))
    if path.suffix == ".safetensors":
        raise FileNotFoundError(f"{path}: safetensors file not found")
    return load_task_state(path)


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, source: str | Path) -> None:
    """Load the `prefix` part of `state` into `module` (fp32); any missing or extra key is an error."""
    part = {k[len(prefix):]: v.float() if v.is_floating_point() else v
            for k, v in state.items() if k.startswith(prefix)}
    if not part:
        found = sorted({k.split(".")[0] for k in state})
        raise ValueError(f"{source}: no weights under {prefix!r} (top-level names found: {found[:8]})")
    try:
        result = module.load_state_dict(part, strict=False)
    except RuntimeError as err:  # a shape mismatch, e.g. a QA head trained on another answer vocabulary
        raise ValueError(f"{source}: the weights under {prefix!r} do not fit {type(module).__name__}: {err}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{source}: the weights under {prefix!r} do not fit: missing {result.missing_keys[:8]}, "
                         f"unexpected {result.unexpected_keys[:8]}")
