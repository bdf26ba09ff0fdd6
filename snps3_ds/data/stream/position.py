"""The training stream's position on the trainer's side: what was consumed, saved, and handed back.

DataLoader workers run ahead of the trainer, so the position that matters is the one carried by the
last batch the trainer *took*, not what the workers have read. Every batch carries the global position
after its round (snps3_ds.data.stream.reader), the same on every rank, so `state_dict()` is one place in
the global order plus the skip totals, and `resume_start` turns it back into a start for any world size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.skips import MonitoredBatches, SkipMonitor
from snps3_ds.data.stream.order import OrderLayout

log = logging.getLogger(__name__)


def fresh_start(layout: OrderLayout) -> dict[str, Any]:
    return {"position": 0, "drawn": [0] * len(layout.sets)}


def resume_start(saved: dict[str, Any] | None, layout: OrderLayout) -> dict[str, Any]:
    """The start position from a saved state_dict. A changed data layout (other sets, sizes, seed or shuffle
    window) cannot be continued sample for sample, so every set starts the epoch after the furthest one
    any set reached; states from before the global order (per-reader positions) are treated the same."""
    if not saved:
        return fresh_start(layout)
    if saved.get("order") == layout.as_dict():
        return {"position": int(saved["position"]["position"]), "drawn": [int(d) for d in saved["position"]["drawn"]]}
    epoch = 1 + _furthest_epoch(saved)
    log.warning("the training data layout changed since the checkpoint (saved %s, now %s): the exact sample stream "
                "cannot be continued; every set starts epoch %d", saved.get("order", saved.get("layout")),
                layout.as_dict(), epoch)
    position = int(saved["position"]["position"]) if "order" in saved else 0
    return {"position": position, "drawn": [epoch * size for _, size in layout.sets]}


def _furthest_epoch(saved: dict[str, Any]) -> int:
    if "order" in saved:
        sizes = [size for _, size in saved["order"]["sets"]]
        return max(drawn // max(1, size) for drawn, size in zip(saved["position"]["drawn"], sizes))
    cursors = [c for p in saved.get("positions", {}).values() for c in p.get("cursors", [])]
    return max((c[0] for c in cursors), default=0)


class ResumableBatches(MonitoredBatches):
    """Training batches through the skip monitor, remembering the position carried by the last one taken."""

    def __init__(self, source: Iterator[VideoTextBatch], monitor: SkipMonitor, layout: OrderLayout,
                 start: dict[str, Any], saved: dict[str, Any] | None = None) -> None:
        super().__init__(source, monitor)
        self.layout, self.position = layout, dict(start)
        if saved:  # the run's skip totals, so rates span the whole run
            monitor.skipped.update(saved.get("skipped", {}))
            monitor.delivered += int(saved.get("delivered", 0))

    def __next__(self) -> VideoTextBatch:
        batch = super().__next__()
        if batch.stream_position is not None:
            self.position = batch.stream_position
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.layout.as_dict(), "position": dict(self.position),
                "skipped": dict(self.monitor.skipped), "delivered": self.monitor.delivered}
