"""The run's one global sample order: the same sequence whatever the number of ranks and DataLoader workers.

Position p = 0, 1, 2, ... counts training samples from the start of the run, across epochs. Sample p is
drawn from set `pick(p)` (sets mixed by weight with a counter-based generator, so any position's set is
known without replaying the stream) as that set's k-th draw, where k counts the earlier positions that
picked it; draw k is sample `k % size` of the set's epoch `k // size` order. An epoch order permutes the
set's shards, then shuffles the samples of each window of `shuffle_window` consecutive shards together.

Who reads which position (ranks, micro-batches, workers) is decided elsewhere (snps3_ds.data.stream.reader);
here a position is only a number, so the saved place in the stream is (position, draws per set), valid
for any world size. Every sample also gets a seed from its place in its set's epoch order, so the
decoder's and collator's random draws (frames, crops, captions, masks) follow the sample, not the reader.
"""

from __future__ import annotations

import bisect
import itertools
from concurrent.futures import ThreadPoolExecutor
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snps3_ds.data.errors import DataQualityError
from snps3_ds.data.seeds import stream_seed
from snps3_ds.data.stream.index import ShardIndex, index_shard
from snps3_ds.data.stream.remote import ShardFiles, is_url

PICK_BLOCK = 1024  # positions whose set picks come from one generator (counter-based, in blocks)


@dataclass(frozen=True)
class OrderLayout:
    """What a saved position is valid for: the same seed, sets and shuffle window (not the world size)."""

    seed: int
    sets: tuple[tuple[str, int], ...]  # (name, number of samples in the order)
    shuffle_window: int

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "sets": [list(s) for s in self.sets], "shuffle_window": self.shuffle_window}


@dataclass(frozen=True)
class Place:
    """Where global position `position` lands: set, epoch and offset in that epoch's order, and its seed."""

    position: int
    set_index: int
    epoch: int
    offset: int
    seed: int


class IndexedSet:
    """One training set: its shards' indexes (only the samples `keep` accepts) and its epoch orders."""

    def __init__(self, name: str, urls: list[str], weight: float, on_dropped: Callable[[str, int], None],
                 keep: Callable[[str], bool] | None = None, files: ShardFiles | None = None) -> None:
        self.name, self.weight = name, weight
        self.shards: list[ShardIndex] = []
        for shard in _indexed(urls, files or ShardFiles()):
            if shard.dropped:
                on_dropped(shard.url, shard.dropped)
            if keep is not None:
                shard = ShardIndex(shard.url, [s for s in shard.samples if keep(s.key)], shard.dropped, shard.source)
            if shard.samples:
                self.shards.append(shard)
        self.size = sum(len(s.samples) for s in self.shards)
        if not self.size:
            raise DataQualityError(f"training set {name!r}: its {len(urls)} shard(s) gave no sample (e.g. {urls[0]}); "
                                   f"are its tars truncated or empty, or is no video of the task's split in them?")
        self._firsts = [0, *itertools.accumulate(len(s.samples) for s in self.shards)]
        self._epochs: OrderedDict[int, tuple[list[list[int]], list[int]]] = OrderedDict()
        self._windows: OrderedDict[tuple[int, int], list[tuple[int, int]]] = OrderedDict()

    def at(self, seed: int, set_index: int, epoch: int, offset: int, window: int) -> tuple[int, int]:
        """(shard, sample) at `offset` of this set's order in `epoch`; only the window it falls in is shuffled."""
        windows, starts = self._epoch(seed, set_index, epoch, window)
        w = bisect.bisect_right(starts, offset) - 1
        key = (epoch, w)
        if key not in self._windows:
            pairs = [(s, i) for s in windows[w] for i in range(len(self.shards[s].samples))]
            random.Random(stream_seed(seed, set_index, epoch, 2, w)).shuffle(pairs)
            self._windows[key] = pairs
            while len(self._windows) > 4:  # readers move forward: a few recent windows are enough
                self._windows.popitem(last=False)
        return self._windows[key][offset - starts[w]]

    def nth(self, index: int) -> tuple[int, int]:
        """(shard, sample) of the index-th sample in file order (substitutes for unreadable samples)."""
        shard = bisect.bisect_right(self._firsts, index) - 1
        return shard, index - self._firsts[shard]

    def _epoch(self, seed: int, set_index: int, epoch: int, window: int) -> tuple[list[list[int]], list[int]]:
        if epoch not in self._epochs:
            order = list(range(len(self.shards)))
            random.Random(stream_seed(seed, set_index, epoch, 1)).shuffle(order)
            windows = [order[i:i + window] for i in range(0, len(order), window)]
            sizes = [sum(len(self.shards[s].samples) for s in w) for w in windows]
            self._epochs[epoch] = (windows, [0, *itertools.accumulate(sizes)])
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]


def _indexed(urls: list[str], files: ShardFiles) -> list[ShardIndex]:
    """Every shard's index, in order; remote ones fetched by a few threads at once, since each costs a round
    trip (a thousand shards on S3 would otherwise take minutes)."""
    if not any(is_url(url) for url in urls):
        return [index_shard(url, files) for url in urls]
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:  # within urllib3's 10 connections per host
        return list(pool.map(lambda url: index_shard(url, files), urls))


class GlobalOrder:
    """The sets, the seed and the rule that maps every global position to a sample (see the module doc)."""

    def __init__(self, sets: list[IndexedSet], seed: int, shuffle_window: int) -> None:
        if not sets or any(s.weight <= 0 for s in sets):
            raise ValueError(f"training sets need positive weights, got {[(s.name, s.weight) for s in sets]}")
        if shuffle_window < 1:
            raise ValueError(f"data.shuffle_window must be >= 1, got {shuffle_window}")
        self.sets, self.seed, self.shuffle_window = sets, seed, shuffle_window
        total = sum(s.weight for s in sets)
        self._cumulative = list(itertools.accumulate(s.weight / total for s in sets))
        self._blocks: OrderedDict[int, list[int]] = OrderedDict()

    @property
    def layout(self) -> OrderLayout:
        return OrderLayout(self.seed, tuple((s.name, s.size) for s in self.sets), self.shuffle_window)

    def picks(self, block: int) -> list[int]:
        """The set index of each position in [block * PICK_BLOCK, (block + 1) * PICK_BLOCK)."""
        if len(self.sets) == 1:
            return [0] * PICK_BLOCK
        if block not in self._blocks:
            rng = random.Random(stream_seed(self.seed, block, 3))
            last = len(self.sets) - 1
            self._blocks[block] = [min(bisect.bisect_right(self._cumulative, rng.random()), last)
                                   for _ in range(PICK_BLOCK)]
            while len(self._blocks) > 2:
                self._blocks.popitem(last=False)
        return self._blocks[block]

    def locate(self, place: Place) -> tuple[IndexedSet, int, int]:
        """(set, shard, sample) of a place."""
        chosen = self.sets[place.set_index]
        shard, sample = chosen.at(self.seed, place.set_index, place.epoch, place.offset, self.shuffle_window)
        return chosen, shard, sample

    def cursor(self, position: int = 0, drawn: list[int] | None = None) -> "Cursor":
        return Cursor(self, position, list(drawn) if drawn is not None else [0] * len(self.sets))


@dataclass
class Cursor:
    """A place in the global order: the next position and how many samples each set gave before it."""

    order: GlobalOrder
    position: int = 0
    drawn: list[int] = field(default_factory=list)

    def take(self, count: int) -> list[Place]:
        """The next `count` places, in order."""
        places = []
        for _ in range(count):
            pick = self.order.picks(self.position // PICK_BLOCK)[self.position % PICK_BLOCK]
            k, size = self.drawn[pick], self.order.sets[pick].size
            epoch, offset = divmod(k, size)
            seed = stream_seed(self.order.seed, pick, epoch, offset, 4)
            places.append(Place(self.position, pick, epoch, offset, seed))
            self.drawn[pick] += 1
            self.position += 1
        return places

    def skip_to(self, position: int) -> None:
        """Move forward to `position` without materialising the places in between."""
        if position < self.position:
            raise ValueError(f"the stream only moves forward: at {self.position}, asked for {position}")
        if len(self.order.sets) == 1:
            self.drawn[0] += position - self.position
            self.position = position
            return
        while self.position < position:
            block, first = divmod(self.position, PICK_BLOCK)
            last = min(PICK_BLOCK, first + position - self.position)
            for pick in self.order.picks(block)[first:last]:
                self.drawn[pick] += 1
            self.position += last - first

    def state(self) -> dict[str, Any]:
        return {"position": self.position, "drawn": list(self.drawn)}
