"""Pre-training losses. Loss math, logits and normalisation run in fp32 whatever the engine's precision."""

from __future__ import annotations

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """fp32 for bf16/fp16 (and fp32) inputs; float64 stays float64 (reference tests compare at 1e-5 in float64)."""
    return x if x.dtype == torch.float64 else x.float()
