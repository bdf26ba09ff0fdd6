"""The resumable training stream: every sample's place is a pure function of (seed, epoch, position).

Each rank's DataLoader workers are *readers* (R = world size x workers per rank, rank-major, so the
data is split by node, then rank, then worker). In every epoch each training set is put in a new order
(shards permuted, then the samples of each window of `shuffle_window` consecutive shards shuffled
together) and cut into R equal contiguous slices; reader r reads slice r by seeking into the tars.
A reader's whole state is small: how many samples it drew, and (epoch, offset) per set. That position
travels with every batch, is saved in checkpoints, and a resumed reader seeks straight to it, so
training continues the same sample stream without re-reading what was consumed.

Randomness is counter-based too: each sample carries a seed derived from (run seed, set, epoch, place
in the epoch's order), which the decoder (frame positions, crops) and the collator (caption choice,
masks) use, so a resumed run reproduces augmentations exactly. Mixing several sets picks the set of
draw n from a seed of (run seed, reader, n).

webdataset's ResampledShards + shuffle buffer cannot be positioned without replaying the stream;
that is why this stream reads by index (snps3_ds.data.stream.index) instead.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from torch.utils.data import IterableDataset, get_worker_info

from snps3_ds.data.errors import DataQualityError
from snps3_ds.data.seeds import stream_seed as derived_seed
from snps3_ds.data.stream.index import IndexedSample, ShardIndex, index_shard

log = logging.getLogger(__name__)

Position = dict[str, Any]  # {"draws": int, "cursors": [[epoch, offset], ...] one per set}


@dataclass(frozen=True)
class StreamLayout:
    """What a saved position is only valid for: the same seed, sets and reader count."""

    seed: int
    world_size: int
    workers: int
    sets: tuple[tuple[str, int], ...]  # (name, number of indexed samples)
    shuffle_window: int

    @property
    def readers(self) -> int:
        return self.world_size * self.workers

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "world_size": self.world_size, "workers": self.workers,
                "sets": [list(s) for s in self.sets], "shuffle_window": self.shuffle_window}


class IndexedSet:
    """One training set: its shards' indexes and the epoch orders of its samples."""

    def __init__(self, name: str, urls: list[str], weight: float, on_dropped: Callable[[str, int], None]) -> None:
        self.name, self.weight = name, weight
        self.shards: list[ShardIndex] = [index_shard(url) for url in urls]
        for shard in self.shards:
            if shard.dropped:
                on_dropped(shard.url, shard.dropped)
        self.size = sum(len(s.samples) for s in self.shards)
        if not self.size:
            raise DataQualityError(f"training set {name!r}: its {len(urls)} shard(s) gave no sample (e.g. {urls[0]}); "
                                   f"are its tars truncated or empty?")

    def epoch_slice(self, seed: int, set_index: int, epoch: int, window: int, readers: int,
                    reader: int) -> list[tuple[int, int]]:
        """Reader `reader`'s (shard, sample) pairs of this epoch, in order; only the needed windows are shuffled."""
        per_reader = self.size // readers
        if per_reader == 0:
            raise DataQualityError(f"training set {self.name!r} has {self.size} samples, fewer than its "
                                   f"{readers} readers (ranks x data.num_workers)")
        order = list(range(len(self.shards)))
        random.Random(derived_seed(seed, set_index, epoch, 1)).shuffle(order)
        windows = [order[i:i + window] for i in range(0, len(order), window)]
        sizes = [sum(len(self.shards[s].samples) for s in w) for w in windows]
        starts = [0, *itertools.accumulate(sizes)]
        begin, end = reader * per_reader, (reader + 1) * per_reader
        chosen: list[tuple[int, int]] = []
        first = bisect.bisect_right(starts, begin) - 1
        for w in range(first, len(windows)):
            if starts[w] >= end:
                break
            pairs = [(s, i) for s in windows[w] for i in range(len(self.shards[s].samples))]
            random.Random(derived_seed(seed, set_index, epoch, 2, w)).shuffle(pairs)
            lo, hi = max(begin, starts[w]) - starts[w], min(end, starts[w + 1]) - starts[w]
            chosen.extend(pairs[lo:hi])
        return chosen


class _OpenFiles:
    """A few shard files kept open per reader (seeks are cheap, opens are not on network filesystems)."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self.files: OrderedDict[str, BinaryIO] = OrderedDict()

    def read(self, url: str, offset: int, size: int) -> bytes:
        handle = self.files.pop(url, None) or open(url, "rb")  # noqa: SIM115 - kept open on purpose
        self.files[url] = handle
        while len(self.files) > self.capacity:
            self.files.popitem(last=False)[1].close()
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise EOFError(f"{url}: {size} bytes expected at offset {offset}, got {len(data)}")
        return data


class ResumableSamples(IterableDataset):
    """Endless raw samples (webdataset-style dicts) for this rank's readers, resumable from positions.

    `positions[w]` is logical worker w's saved position; `rotation` makes physical worker p serve
    logical worker (p + rotation) % workers, so that after resuming the DataLoader's round robin
    hands out batches in the same order as the uninterrupted run.
    """

    def __init__(self, sets: list[tuple[str, list[str], float]], seed: int, rank: int, world_size: int,
                 workers: int, shuffle_window: int, on_error: Callable[[str, BaseException], None] | None = None
                 ) -> None:
        super().__init__()
        if not sets or any(w <= 0 for _, _, w in sets):
            raise ValueError(f"training sets need positive weights, got {[(n, w) for n, _, w in sets]}")
        if shuffle_window < 1:
            raise ValueError(f"data.shuffle_window must be >= 1, got {shuffle_window}")
        self.seed, self.rank, self.world_size, self.workers = seed, rank, world_size, max(1, workers)
        self.shuffle_window = shuffle_window
        self.positions: dict[int, Position] = {}  # set before iterating when resuming (see class doc)
        self.rotation = 0
        self.on_error = on_error or (lambda reason, err: log.warning("skipping a sample (%s): %s", reason, err))
        self.dropped: dict[str, int] = {}
        self.sets = [IndexedSet(name, urls, weight, self._note_dropped) for name, urls, weight in sets]
        readers = world_size * self.workers
        for indexed in self.sets:  # checked here, in the training process, not first inside a worker
            if indexed.size < readers:
                raise DataQualityError(f"training set {indexed.name!r} has {indexed.size} samples, fewer than its "
                                       f"{readers} readers (ranks x data.num_workers)")

    def _note_dropped(self, url: str, count: int) -> None:
        self.dropped[url] = count
        log.warning("%s: %d sample(s) cut off (truncated shard); they are left out of training", url, count)

    @property
    def layout(self) -> StreamLayout:
        return StreamLayout(self.seed, self.world_size, self.workers, tuple((s.name, s.size) for s in self.sets),
                            self.shuffle_window)

    def start_position(self) -> Position:
        return {"draws": 0, "cursors": [[0, 0] for _ in self.sets]}

    def logical_worker(self) -> int:
        info = get_worker_info()
        physical = info.id if info else 0
        return (physical + self.rotation) % self.workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = self.logical_worker()
        reader = self.rank * self.workers + worker
        position = self.positions.get(worker) or self.start_position()
        return self.read(reader, worker, position)

    def read(self, reader: int, worker: int, position: Position) -> Iterator[dict[str, Any]]:
        files = _OpenFiles()
        draws, cursors = position["draws"], [list(c) for c in position["cursors"]]
        slices: dict[tuple[int, int], list[tuple[int, int]]] = {}
        total_weight = sum(s.weight for s in self.sets)
        cumulative = list(itertools.accumulate(s.weight / total_weight for s in self.sets))
        readers = self.world_size * self.workers
        if self.dropped and reader == 0:  # reported once per run; the loader counts them as skips
            for url, count in self.dropped.items():
                self.on_error("truncated_shard", EOFError(f"{url}: {count} sample(s) cut off"))
        while True:
            pick = 0
            if len(self.sets) > 1:
                u = random.Random(derived_seed(self.seed, reader, draws, 3)).random()
                pick = min(bisect.bisect_right(cumulative, u), len(self.sets) - 1)
            epoch, offset = cursors[pick]
            key = (pick, epoch)
            if key not in slices:
                slices = {k: v for k, v in slices.items() if k[0] != pick}  # keep one epoch per set
                slices[key] = self.sets[pick].epoch_slice(self.seed, pick, epoch, self.shuffle_window, readers, reader)
            chosen = slices[key]
            shard_index, sample_index = chosen[offset]
            offset += 1
            cursors[pick] = [epoch + 1, 0] if offset == len(chosen) else [epoch, offset]
            draws += 1
            place = reader * len(chosen) + offset - 1
            sample = self._load(files, self.sets[pick], shard_index, sample_index)
            if sample is None:
                continue
            sample["__set__"] = self.sets[pick].name
            sample["__seed__"] = derived_seed(self.seed, pick, epoch, place, 4)
            sample["__pos__"] = {"worker": worker, "draws": draws, "cursors": [list(c) for c in cursors]}
            yield sample

    def _load(self, files: _OpenFiles, shard_set: IndexedSet, shard_index: int, sample_index: int) -> dict | None:
        shard = shard_set.shards[shard_index]
        indexed: IndexedSample = shard.samples[sample_index]
        try:
            sample: dict[str, Any] = {"__key__": indexed.key, "__url__": shard.url}
            for member in indexed.members:
                sample[member.ext] = files.read(shard.url, member.offset, member.size)
            return sample
        except OSError as err:
            self.on_error("unreadable_shard", err)
        except EOFError as err:
            self.on_error("truncated_shard", err)
        return None


def next_rotation(batches_consumed: int, workers: int) -> int:
    """Which logical worker must hand out the next batch after `batches_consumed` batches."""
    return batches_consumed % max(1, workers)
