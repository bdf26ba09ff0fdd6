"""Where an evaluation runs: the device, this rank, the world, and the dtype frames are cast to.

Every evaluation protocol takes one of these instead of four loose arguments; training's in-run validation
builds it from its engine (`EvalContext.of(engine)`), a stand-alone evaluation from its processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class EvalContext:
    device: torch.device | str = "cpu"
    rank: int = 0
    world_size: int = 1
    frames_dtype: torch.dtype | None = None  # None: frames stay as the loader made them (fp32)

    @classmethod
    def of(cls, engine: Any) -> "EvalContext":
        """The context of a training engine (anything with device, rank, world_size, frames_dtype)."""
        return cls(engine.device, engine.rank, engine.world_size, engine.frames_dtype)
