"""Every random-number state a training process owns, captured and restored for exact resume.

The data stream's randomness is counter-based (snps3_ds.data.stream.order), so what is left is the training
process: torch's CPU/CUDA generators (dropout, VTM negatives), Python's and NumPy's global generators,
and any generator a task keeps itself (it exposes `rng_state()` / `load_rng_state()`).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture(task: Any) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # NumPy's state as plain lists: checkpoints are read back with torch.load(weights_only=True)
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if hasattr(task, "rng_state"):
        state["task"] = task.rng_state()
    return state


def restore(task: Any, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "task" in state and hasattr(task, "load_rng_state"):
        task.load_rng_state(state["task"])


def reseed(seed: int, step: int, rank: int) -> None:
    """Fresh generators for a rank that has no saved state of its own (a resume on another world size: the
    saved states belong to the old ranks); derived from (seed, step, rank), so such a resume is repeatable."""
    base = random.Random(repr(("resume", seed, step, rank))).getrandbits(63)
    torch.manual_seed(base)
    random.seed(base)
    np.random.seed(base % 2**32)
