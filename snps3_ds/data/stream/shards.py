"""WebDataset shards: resolving shard specs, training-set mixing weights, and evaluation streams.

Evaluation streams read every sample exactly once across ranks and workers, in a fixed order; exceptions
while reading a tar go to a handler (the loader's SkipCounter counts them). The training stream, which
must be resumable, reads by index instead (snps3_ds.data.stream.reader).
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
