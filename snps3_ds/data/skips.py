"""Counting skipped samples where they happen (DataLoader workers) and judging the rate where it matters.

Workers are separate processes, so a counter there is invisible to the trainer. Each worker's
`SkipCounter` hands its new counts to the next batch it yields (`VideoTextBatch.skipped`); the
`SkipMonitor` in the training process sums them, exposes the totals, and stops the run with a
`DataQualityError` once the skip rate passes `data.max_skip_rate`.
"""

from __future__ import annotations

import logging
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.errors import DataQualityError, RemoteReadError

log = logging.getLogger(__name__)

_ADVICE = "Check the shards with data_prep/verify_shards.py (shards behind URLs: that their server answers)"


def shard_error_reason(exn: BaseException) -> str:
    """A counter key for an exception raised while reading a shard."""
    if isinstance(exn, RemoteReadError):
        return "remote"
    if isinstance(exn, (tarfile.ReadError, EOFError)) or "unexpected end" in str(exn).lower():
        return "truncated_shard"
    if isinstance(exn, OSError):
        return "unreadable_shard"
    return "bad_shard"


class SkipCounter:
    """Per-worker counts of skipped samples by reason; `take()` returns what is new since the last call."""

    def __init__(self) -> None:
        self.pending: Counter[str] = Counter()
        self.total: Counter[str] = Counter()

    def add(self, reason: str, count: int = 1) -> None:
        self.pending[reason] += count
        self.total[reason] += count

    def take(self) -> dict[str, int]:
        new, self.pending = dict(self.pending), Counter()
        return new

    def skip(self, reason: str, exn: BaseException) -> None:
        """Count and log a sample (or the rest of a shard) that could not be read."""
        self.add(reason)
        log.warning("skipping unreadable data (%s): %s", reason, str(exn)[:300])

    def shard_handler(self, exn: BaseException) -> bool:
        """A webdataset handler: count and log a shard that cannot be opened or read, then go on."""
        self.skip(shard_error_reason(exn), exn)
        return True

    def attach(self, batch: VideoTextBatch) -> VideoTextBatch:
        """Pipeline stage after batching: the batch carries the skips since the previous batch."""
        batch.skipped = self.take()
        return batch


@dataclass
class StreamFailure:
    """What a training reader hands on, in place of a batch, when it cannot fill one (every substitute failed,
    or its shard server stayed down): why, and the skips it counted, so the trainer's SkipMonitor can judge
    the whole run's skip rate and stop it with one clear error. A DataLoader worker cannot raise that
    error itself: its counts would be lost, and torch wraps its exception in the worker's traceback."""

    message: str
    skipped: dict[str, int] = field(default_factory=dict)
    stream_position: dict | None = None
    num_videos: int = 0


class SkipMonitor:
    """Sums the skips carried by batches; raises DataQualityError when the rate passes the threshold.

    The rate is skipped / (skipped + delivered) over the whole run, checked once `warmup` samples have
    been seen so one early bad sample cannot stop a run.
    """

    def __init__(self, max_skip_rate: float, warmup: int, source: str = "data") -> None:
        if not 0.0 <= max_skip_rate <= 1.0 or warmup < 0:
            raise ValueError(f"data.max_skip_rate must be in [0, 1] and data.skip_rate_warmup >= 0, "
                             f"got {max_skip_rate} and {warmup}")
        self.max_skip_rate, self.warmup, self.source = max_skip_rate, warmup, source
        self.skipped: Counter[str] = Counter()
        self.delivered = 0

    @property
    def skip_rate(self) -> float:
        seen = self.delivered + sum(self.skipped.values())
        return sum(self.skipped.values()) / seen if seen else 0.0

    def stats(self) -> dict[str, float]:
        """Flat numbers for the metrics log: `data/skip_rate`, `data/skipped`, `data/skipped_<reason>`."""
        row: dict[str, float] = {"data/skip_rate": self.skip_rate, "data/skipped": float(sum(self.skipped.values()))}
        row.update({f"data/skipped_{reason}": float(n) for reason, n in sorted(self.skipped.items())})
        return row

    def observe(self, batch: VideoTextBatch | StreamFailure) -> VideoTextBatch:
        self.delivered += batch.num_videos
        if batch.skipped:
            self.skipped.update(batch.skipped)
        failure = batch.message if isinstance(batch, StreamFailure) else ""
        if batch.skipped or failure:
            self.check(failure)
        if failure:  # the rate is within the limit (or still in warm-up), but the stream cannot go on
            raise DataQualityError(f"{self.source}: {failure}; skipped so far: {dict(self.skipped)}. {_ADVICE}")
        return batch

    def check(self, failure: str = "") -> None:
        seen = self.delivered + sum(self.skipped.values())
        if seen >= self.warmup and self.skip_rate > self.max_skip_rate:
            raise DataQualityError(
                f"{self.source}: {sum(self.skipped.values())} of {seen} samples skipped ({self.skip_rate:.1%}), "
                f"more than data.max_skip_rate={self.max_skip_rate:.1%}; reasons: {dict(self.skipped)}"
                f"{'; ' + failure if failure else ''}. {_ADVICE}, or raise data.max_skip_rate.")


class MonitoredBatches:
    """Batches from `source` through a SkipMonitor. Iterable again and again when `source` is (evaluation);
    a one-shot iterator when it is one (training). `stats()` gives the totals to the trainer/logger."""

    def __init__(self, source: Iterable[VideoTextBatch], monitor: SkipMonitor) -> None:
        self.source, self.monitor = source, monitor
        self._iterator: Iterator[VideoTextBatch] | None = None

    def __iter__(self) -> Iterator[VideoTextBatch]:
        if isinstance(self.source, Iterator):
            return self
        return (self.monitor.observe(batch) for batch in self.source)

    def __next__(self) -> VideoTextBatch:
        if self._iterator is None:
            self._iterator = iter(self.source)
        return self.monitor.observe(next(self._iterator))

    def stats(self) -> dict[str, float]:
        return self.monitor.stats()

    def close(self) -> None:
        """Stop the DataLoader workers now. At interpreter exit torch leaves them to multiprocessing, which
        stops them with SIGTERM, and training workers ignore SIGTERM (snps3_ds.data.loader): a run that ends
        in an exception would wait for them forever."""
        for source in (self._iterator, self.source):
            shutdown = getattr(source, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
                return
