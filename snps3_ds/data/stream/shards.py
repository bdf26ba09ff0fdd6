"""WebDataset shards: resolving shard specs, training-set mixing weights, and evaluation streams.

Evaluation streams read every sample exactly once across ranks and workers, in a fixed order; exceptions
while reading a tar go to a handler (the loader's SkipCounter counts them). The training stream, which
must be resumable, reads by index instead (snps3_ds.data.stream.reader). A spec may be a URL (http(s)://,
s3:// ...): a `.shards.json` or its prefix, a tar, or a brace pattern; URLs are never globbed.
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
from urllib.parse import urlsplit

import webdataset as wds
from torch.utils.data import IterableDataset
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tar_file_expander
from webdataset.utils import pytorch_worker_info

from snps3_ds.config import RemoteShardsConfig
from snps3_ds.data.stream.remote import ShardFiles, beside, is_url


Handler = Callable[[BaseException], bool]


class ShardSpecError(FileNotFoundError):
    """A shard path or pattern that matches nothing; names the spec and what was tried."""


def resolve_shards(specs: Iterable[str], remote: RemoteShardsConfig | None = None) -> list[str]:
    """Tar paths from `X.shards.json` files, their prefixes (`DIR/train`), globs, brace patterns or tars; tar
    URLs from the same forms behind a URL, globs excepted (`remote`: the retries for fetching a .shards.json)."""
    urls: list[str] = []
    files = ShardFiles(remote)
    for spec in specs:
        urls.extend(_resolve_url(str(spec), files) if is_url(str(spec)) else _resolve_one(str(spec)))
    files.close()
    if not urls:
        raise ShardSpecError("no shards given (data.train_shards / data.eval_shards is empty)")
    return urls


def _resolve_url(spec: str, files: ShardFiles) -> list[str]:
    if "{" in spec:
        return list(expand_urls(spec))
    path = urlsplit(spec).path
    if path.endswith(".tar"):
        return [spec]
    index = spec if path.endswith(".shards.json") else spec + ".shards.json"
    try:
        text = files.read_all(index).decode("utf-8")
    except FileNotFoundError as err:
        raise ShardSpecError(f"shard spec {spec!r}: {err}; a URL spec is a .tar, a brace pattern "
                             f"(.../train-{{000000..000009}}.tar), or a .shards.json or its prefix (URLs are not "
                             f"globbed)") from err
    return [beside(index, entry) for entry in _listed(text, index)]


def _listed(text: str, index: Path | str) -> list[str]:
    """The `path` of every entry of a `.shards.json`."""
    try:
        return [str(entry["path"]) for entry in json.loads(text)["shards"]]
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ShardSpecError(f"{index}: expected JSON with a 'shards' list of {{'path': ...}} ({err})") from err


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
    paths = [str(index.parent / entry) for entry in _listed(index.read_text(), index)]
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

    def __init__(self, urls: list[str], handler: Handler = wds.warn_and_continue,
                 remote: RemoteShardsConfig | None = None) -> None:
        super().__init__()
        self.urls, self.handler, self.remote = list(urls), handler, remote

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world, worker, workers = pytorch_worker_info()
        readers, me = world * workers, rank * workers + worker
        if len(self.urls) >= readers:
            yield from self._samples(wds.split_by_worker(wds.split_by_node(iter(self.urls))))
            return
        for i, sample in enumerate(self._samples(iter(self.urls))):
            if i % readers == me:
                yield sample

    def _samples(self, urls: Iterator[str]) -> Iterator[dict[str, Any]]:
        """webdataset's tarfile_to_samples with our opener in place of its gopen (which pipes http(s) through
        curl and has no s3://): local files, and URLs with the same timeouts and retries as training reads."""
        files = ShardFiles(self.remote)
        try:
            members = tar_file_expander(_opened(urls, files, self.handler), handler=self.handler)
            yield from group_by_keys(members, handler=self.handler)
        finally:
            files.close()


def _opened(urls: Iterator[str], files: ShardFiles, handler: Handler) -> Iterator[dict[str, Any]]:
    """{"url", "stream"} per shard, each stream closed once the next shard is asked for."""
    for url in urls:
        try:
            stream = files.open_stream(url)
        except Exception as exn:  # noqa: BLE001 - the handler decides (the loader's counts a skip and goes on)
            if handler(exn):
                continue
            return
        try:
            yield {"url": url, "stream": stream}
        finally:
            stream.close()


def eval_stream(urls: list[str], handler: Handler = wds.warn_and_continue,
                remote: RemoteShardsConfig | None = None) -> wds.DataPipeline:
    """Every sample once across ranks and workers, in shard order (see EvalSamples)."""
    return wds.DataPipeline(EvalSamples(urls, handler, remote))
