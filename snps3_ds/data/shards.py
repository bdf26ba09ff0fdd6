"""WebDataset shard streams: which tars to read, and in what order on which rank and worker.

Training streams are infinite (shards resampled with a seed per rank and worker, several datasets mixed by
weight, then a shuffle buffer); evaluation streams read every sample exactly once across ranks and workers,
in a fixed order. Exceptions while reading a tar go to a handler (the loader's SkipCounter counts them).
"""

from __future__ import annotations

import bisect
import glob
import itertools
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import webdataset as wds
from webdataset.shardlists import expand_urls
from torch.utils.data import IterableDataset
from webdataset.utils import pytorch_worker_info

from snps3_ds.data.errors import DataQualityError

Handler = Callable[[BaseException], bool]


class ShardSpecError(FileNotFoundError):
    """A shard path or pattern that matches nothing; names the spec and what was tried."""


def resolve_shards(specs: Iterable[str]) -> list[str]:
    """Tar paths from `X.shards.json` files, their prefixes (`DIR/train`), globs, brace patterns or tars."""
    urls: list[str] = []
    for spec in specs:
        urls.extend(_resolve_one(str(spec)))
    if not urls:
        raise ShardSpecError("no shards given (data.train_shards / data.eval_shards is empty)")
    return urls


def _resolve_one(spec: str) -> list[str]:
    index = Path(spec if spec.endswith(".shards.json") else spec + ".shards.json")
    if index.is_file():
        return _shards_from_index(index)
    if spec.endswith(".shards.json"):
        raise ShardSpecError(f"shard index not found: {spec}")
    if "{" in spec:
        paths = expand_urls(spec)
    elif any(ch in spec for ch in "*?["):
        paths = sorted(glob.glob(spec))
    else:
        paths = [spec]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing or not paths:
        raise ShardSpecError(f"shard spec {spec!r} matches no readable tar (missing: {missing[:3] or spec}); "
                             f"expected a .shards.json, a prefix with one beside it, a tar, a glob or a brace pattern")
    return paths


def _shards_from_index(index: Path) -> list[str]:
    try:
        entries = json.loads(index.read_text())["shards"]
        paths = [str(index.parent / entry["path"]) for entry in entries]
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ShardSpecError(f"{index}: expected JSON with a 'shards' list of {{'path': ...}} ({err})") from err
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ShardSpecError(f"{index} lists {len(missing)} missing shard(s), e.g. {missing[0]}")
    return paths


def stream_seed(seed: int, *parts: int) -> int:
    """One 63-bit seed from the run seed and (rank, worker, ...), stable across Python runs."""
    return random.Random(repr((seed, *parts))).getrandbits(63)


def _worker_seed(seed: int, *salt: int) -> int:
    """The seed of this (rank, DataLoader worker), read when the stream starts inside the worker."""
    rank, _, worker, _ = pytorch_worker_info()
    return stream_seed(seed, rank, worker, *salt)


@dataclass(frozen=True)
class ShardSet:
    """One dataset of a training mixture: its tar paths and its share of the samples."""

    urls: list[str]
    weight: float = 1.0
    name: str = "train"


def weighted_interleave(sources: list[Iterator[Any]], weights: list[float], rng: random.Random) -> Iterator[Any]:
    """Endless samples, each from source i with probability weights[i] / sum(weights).

    wds.RandomMix does this with the global `random` module, which cannot be seeded per rank and worker
    without touching global state; this is the same rule with an explicit generator.
    """
    total = sum(weights)
    cumulative = list(itertools.accumulate(w / total for w in weights))
    while True:
        pick = min(bisect.bisect_right(cumulative, rng.random()), len(sources) - 1)
        yield next(sources[pick])


def _set_samples(shard_set: ShardSet, index: int, seed: int, handler: Handler) -> Iterator[dict[str, Any]]:
    """Infinite raw samples of one set: shards resampled with a seed per (rank, worker, set)."""
    shards = wds.ResampledShards(shard_set.urls, seed=seed, deterministic=True,
                                 worker_seed=lambda: _worker_seed(seed, index))
    barren, limit = 0, max(10, 3 * len(shard_set.urls))

    def watched() -> Iterator[dict[str, str]]:
        # Resampling never ends, so a set whose every shard is unreadable would spin forever.
        nonlocal barren
        for shard in shards:
            barren += 1
            if barren > limit:
                raise DataQualityError(f"training set {shard_set.name!r}: {limit} shard reads in a row gave no "
                                       f"sample (e.g. {shard['url']}); are its tars truncated or empty?")
            yield shard

    for sample in wds.tarfile_to_samples(handler=handler)(watched()):
        barren = 0
        sample["__set__"] = shard_set.name
        yield sample


class MixedSamples(IterableDataset):
    """Endless raw samples drawn from several ShardSets by weight (a single set: just that set)."""

    def __init__(self, sets: list[ShardSet], seed: int, handler: Handler = wds.warn_and_continue) -> None:
        super().__init__()
        if not sets or any(s.weight <= 0 for s in sets):
            raise ValueError(f"training sets need positive weights, got {[(s.name, s.weight) for s in sets]}")
        self.sets, self.seed, self.handler = sets, seed, handler

    def __iter__(self) -> Iterator[dict[str, Any]]:
        sources = [_set_samples(s, i, self.seed, self.handler) for i, s in enumerate(self.sets)]
        if len(sources) == 1:
            return sources[0]
        rng = random.Random(_worker_seed(self.seed, len(self.sets), 7))
        return weighted_interleave(sources, [s.weight for s in self.sets], rng)


def train_stream(urls: list[str] | list[ShardSet], seed: int, shuffle_buffer: int,
                 handler: Handler = wds.warn_and_continue) -> wds.DataPipeline:
    """Infinite raw samples: shards resampled and samples shuffled with a seed per rank and worker;
    several ShardSets are mixed by weight before the shuffle buffer.

    Resampling instead of split_by_node keeps every rank busy whatever the shard count is.
    """
    sets = [u if isinstance(u, ShardSet) else None for u in urls]
    sets = sets if all(sets) else [ShardSet(list(urls))]

    def seeded_shuffle(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rng = random.Random(_worker_seed(seed) + 1)
        yield from wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=rng)(src)

    return wds.DataPipeline(MixedSamples(sets, seed, handler), seeded_shuffle)


class EvalSamples(IterableDataset):
    """Every sample once across ranks and DataLoader workers, in a fixed order.

    With at least as many shards as (ranks x workers), each reader takes whole shards (webdataset's
    split_by_node then split_by_worker), so no tar is read twice. With fewer shards, every reader scans
    all of them and keeps samples i with i mod readers == its index, which is still exactly once.
    """

    def __init__(self, urls: list[str], handler: Handler = wds.warn_and_continue) -> None:
        super().__init__()
        self.urls, self.handler = list(urls), handler

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world, worker, workers = pytorch_worker_info()
        readers, me = world * workers, rank * workers + worker
        to_samples = wds.tarfile_to_samples(handler=self.handler)
        if len(self.urls) >= readers:
            mine = wds.split_by_worker(wds.split_by_node(iter(self.urls)))
            yield from to_samples({"url": url} for url in mine)
            return
        for i, sample in enumerate(to_samples({"url": url} for url in self.urls)):
            if i % readers == me:
                yield sample


def eval_stream(urls: list[str], handler: Handler = wds.warn_and_continue) -> wds.DataPipeline:
    """Every sample once across ranks and workers, in shard order (see EvalSamples)."""
    return wds.DataPipeline(EvalSamples(urls, handler))
