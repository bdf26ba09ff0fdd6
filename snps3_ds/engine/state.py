"""The one train state a rank saves and resumes: counters, the data stream's position, every RNG state.

Written once per rank per checkpoint (`rank_NNNNN.pt`, snps3_ds.engine.run_checkpoints); the engine's own
files hold weights, optimiser and schedule. `data` is whatever the batch stream's `state_dict()` returned
and goes back to the loader as its start position; `rng` comes from snps3_ds.engine.rng.capture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TrainState:
    step: int = 0  # optimiser steps done
    samples: int = 0  # training samples consumed, all ranks
    nonfinite_skipped: int = 0  # micro-batches skipped on every rank because some rank's loss was not finite
    data: dict[str, Any] | None = None  # the batch stream's position when the state was captured
    rng: dict[str, Any] | None = field(default=None, repr=False)  # RNG states when the state was captured

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(state) - known)
        if unknown:
            raise ValueError(f"train state: unknown keys {unknown} (a checkpoint from a newer version?)")
        for name, value in state.items():
            setattr(self, name, value)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "TrainState":
        out = cls()
        out.load_state_dict(state)
        return out

    def counters(self) -> str:
        return f"step {self.step}, {self.samples} samples seen"
