"""The training stream's position on the trainer's side: what was consumed, saved, and handed back.

DataLoader workers run ahead of the trainer, so the position that matters is the one carried by the
last batch the trainer *took* from each worker, not what the workers have read. ResumableBatches keeps
those positions; `state_dict()` goes into every checkpoint (per rank) and `resume_positions` turns it
back into start positions for the readers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.skips import MonitoredBatches, SkipMonitor
from snps3_ds.data.stream.reader import Position, StreamLayout

log = logging.getLogger(__name__)


@dataclass
class StreamState:
    batches: int = 0  # batches this rank's trainer consumed
    positions: dict[int, Position] = field(default_factory=dict)  # logical worker -> its position
    skipped: dict[str, int] = field(default_factory=dict)  # the skip monitor's totals, so rates span the run
    delivered: int = 0


def resume_positions(saved: dict[str, Any] | None, layout: StreamLayout, workers: int) -> StreamState:
    """Start positions from a saved state_dict; a changed layout (world size, workers, data) cannot be
    continued sample for sample, so every reader starts the epoch after the furthest one reached."""
    if not saved:
        return StreamState()
    positions = {int(w): p for w, p in saved.get("positions", {}).items()}
    if saved.get("layout") == layout.as_dict():
        return StreamState(int(saved.get("batches", 0)), positions, dict(saved.get("skipped", {})),
                           int(saved.get("delivered", 0)))
    epochs = [c[0] for p in positions.values() for c in p["cursors"]] or [0]
    start = max(epochs) + 1
    log.warning("the training data layout changed since the checkpoint (saved %s, now %s): the exact sample stream "
                "cannot be continued; every reader starts epoch %d", saved.get("layout"), layout.as_dict(), start)
    fresh = {"draws": 0, "cursors": [[start, 0] for _ in layout.sets]}
    return StreamState(0, {w: fresh for w in range(workers)})


class ResumableBatches(MonitoredBatches):
    """Training batches through the skip monitor, remembering each worker's position as batches are taken."""

    def __init__(self, source: Iterator[VideoTextBatch], monitor: SkipMonitor, layout: StreamLayout,
                 state: StreamState) -> None:
        super().__init__(source, monitor)
        self.layout, self.state = layout, StreamState(state.batches, dict(state.positions))
        monitor.skipped.update(state.skipped)
        monitor.delivered += state.delivered

    def __next__(self) -> VideoTextBatch:
        batch = super().__next__()
        position = batch.stream_position
        if position is not None:
            self.state.positions[int(position["worker"])] = {k: v for k, v in position.items() if k != "worker"}
        self.state.batches += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"layout": self.layout.as_dict(), "batches": self.state.batches,
                "positions": {str(w): p for w, p in self.state.positions.items()},
                "skipped": dict(self.monitor.skipped), "delivered": self.monitor.delivered}
