"""The training stream's readers: which micro-batches of the global order each rank and worker reads.

The global order (snps3_ds.data.stream.order) is one sequence of samples. Cut into micro-batches of
`micro` samples, its micro-batches are dealt out round-robin over the ranks: the n-th micro-batch a rank
takes (counted from where the run (re)started) is global micro-batch n * world + rank, and a rank's
DataLoader worker w reads that rank's micro-batches n = w, w + workers, ... (the DataLoader hands them
out in that order). So optimiser step s, made of `accumulation` micro-batches per rank, consumes global
micro-batches [s * A * W, (s + 1) * A * W) = samples [s * G, (s + 1) * G) for the global batch
G = micro x accumulation x world, whatever W is: resuming on another world size with the accumulation
adjusted so G stays the same continues the very same sequence of global batches.

After all ranks took n micro-batches they consumed exactly the first n * world of them, so the position
every batch carries (where the next round starts, and each set's draw count there) is the same on every
rank and is all a checkpoint needs. A sample that cannot be read or decoded is replaced by a substitute
drawn from its set with a generator seeded by its position, so batches keep their size and the stream
stays the same for any world size and worker count; every failure is counted as a skip. Shards behind
URLs are read by range requests (snps3_ds.data.stream.remote); a reader that cannot fill a slot (every
substitute failed, or its server stayed down past data.remote.max_outage_s) hands a StreamFailure on in
place of the batch, which the trainer's SkipMonitor turns into the run's DataQualityError.

webdataset's ResampledShards + shuffle buffer cannot be positioned without replaying the stream;
that is why this stream reads by index (snps3_ds.data.stream.index) instead.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from snps3_ds.config import RemoteShardsConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.decode.sample import DecodedSample
from snps3_ds.data.errors import RemoteReadError
from snps3_ds.data.seeds import stream_seed
from snps3_ds.data.skips import StreamFailure
from snps3_ds.data.stream.index import IndexedSample
from snps3_ds.data.stream.order import GlobalOrder, Place
from snps3_ds.data.stream.remote import ShardFiles

log = logging.getLogger(__name__)

MAX_SUBSTITUTES = 64  # bad samples in a row for one slot before the stream gives up (all-bad data)


@dataclass(frozen=True)
class BatchPlan:
    """This rank's share of the global micro-batches, from a start position (a multiple of world x micro)."""

    rank: int
    world_size: int
    micro: int
    workers: int = 1

    def first_sample(self, start: int, n: int) -> int:
        """Global position of the first sample of this rank's n-th micro-batch."""
        return start + (n * self.world_size + self.rank) * self.micro

    def after_round(self, start: int, n: int) -> int:
        """Where the stream stands once every rank took n + 1 micro-batches."""
        return start + (n + 1) * self.world_size * self.micro


@dataclass(frozen=True)
class BatchStages:
    """What turns a raw sample into a batch (run in the worker): decode one sample, collate a list, count skips."""

    decode: Callable[[dict[str, Any]], DecodedSample | None]
    collate: Callable[[list[DecodedSample]], VideoTextBatch]
    attach_skips: Callable[[VideoTextBatch], VideoTextBatch]
    on_error: Callable[[str, BaseException], None]


class _StreamStopped(Exception):
    """A slot that no substitute could fill: the reader hands a StreamFailure on instead of a batch."""


class GlobalBatches(IterableDataset):
    """Endless training micro-batches for one rank, read from the global order from `start` on.

    `start` is a saved position ({"position", "drawn"}, see Cursor.state); every batch carries in
    `stream_position` the position after its round (BatchPlan.after_round), to save and resume from.
    """

    def __init__(self, order: GlobalOrder, plan: BatchPlan, stages: BatchStages, start: dict[str, Any],
                 remote: RemoteShardsConfig | None = None) -> None:
        super().__init__()
        self.order, self.plan, self.stages, self.start = order, plan, stages, start
        self.remote = remote or RemoteShardsConfig()
        self.dropped: dict[str, int] = {}
        self._last_error = ""

    def __iter__(self) -> Iterator[VideoTextBatch | StreamFailure]:
        info = get_worker_info()
        worker = info.id if info else 0
        cursor = self.order.cursor(self.start["position"], self.start["drawn"])
        start, files = self.start["position"], ShardFiles(self.remote)
        if worker == 0 and self.plan.rank == 0:  # reported once per run; the loader counts them as skips
            for url, count in self.dropped.items():
                self.stages.on_error("truncated_shard", EOFError(f"{url}: {count} sample(s) cut off"))
        n = worker
        try:
            while True:
                cursor.skip_to(self.plan.first_sample(start, n))
                places = cursor.take(self.plan.micro)
                cursor.skip_to(self.plan.after_round(start, n))
                try:
                    samples = [self._decoded(files, place) for place in places]
                except _StreamStopped as stop:
                    yield self.stages.attach_skips(StreamFailure(str(stop)))
                    return
                batch = self.stages.collate(samples)
                batch.stream_position = cursor.state()
                yield self.stages.attach_skips(batch)
                n += max(1, self.plan.workers)
        finally:
            files.close()

    def _decoded(self, files: ShardFiles, place: Place) -> DecodedSample:
        """The sample at `place`, or the first good substitute for it (each failure counted)."""
        chosen, shard, index = self.order.locate(place)
        sample = self._read(files, chosen.shards[shard], index, place.seed, chosen.name)
        decoded = self.stages.decode(sample) if sample is not None else None
        attempt = 0
        while decoded is None:
            attempt += 1
            self._check_going(files, chosen.name, attempt)
            salt = (self.order.seed, place.set_index, place.position, attempt)
            shard, index = chosen.nth(random.Random(stream_seed(*salt, 5)).randrange(chosen.size))
            sample = self._read(files, chosen.shards[shard], index, stream_seed(*salt, 6), chosen.name)
            decoded = self.stages.decode(sample) if sample is not None else None
        return decoded

    def _check_going(self, files: ShardFiles, set_name: str, attempt: int) -> None:
        """Stop (_StreamStopped) once substitutes keep failing or the shard server has been down too long."""
        last = f"; the last failure: {self._last_error}" if self._last_error else ""
        if attempt > MAX_SUBSTITUTES:
            raise _StreamStopped(f"training set {set_name!r}: {MAX_SUBSTITUTES} samples in a row could not be read "
                                 f"or decoded (the skip counts say why){last}")
        if files.down_for() > self.remote.max_outage_s:
            raise _StreamStopped(f"training set {set_name!r}: every shard read failed for {files.down_for():.0f} s "
                                 f"(data.remote.max_outage_s={self.remote.max_outage_s:g}){last}")

    def _read(self, files: ShardFiles, shard, index: int, seed: int, set_name: str) -> dict[str, Any] | None:
        indexed: IndexedSample = shard.samples[index]
        try:
            sample: dict[str, Any] = {"__key__": indexed.key, "__url__": shard.url, "__set__": set_name,
                                      "__seed__": seed}
            for member in indexed.members:
                sample[member.ext] = files.read(shard.url, member.offset, member.size)
            self._last_error = ""
            return sample
        except RemoteReadError as err:  # the URL failed every try (snps3_ds.data.stream.remote)
            self._failed("remote", err)
        except OSError as err:
            self._failed("unreadable_shard", err)
        except EOFError as err:
            self._failed("truncated_shard", err)
        return None

    def _failed(self, reason: str, err: BaseException) -> None:
        self._last_error = f"{reason}: {err}"
        self.stages.on_error(reason, err)
