"""WebDataset shard streams: which tars to read, and in what order on which rank and worker.

Training streams are infinite (shards resampled with a seed per rank and worker, then a shuffle buffer);
evaluation streams read every sample exactly once across ranks and workers, in a fixed order.
"""

from __future__ import annotations

import glob
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import webdataset as wds
from webdataset.shardlists import expand_urls
from webdataset.utils import pytorch_worker_info


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


def train_stream(urls: list[str], seed: int, shuffle_buffer: int) -> wds.DataPipeline:
    """Infinite raw samples: shards resampled and samples shuffled with a seed per rank and worker.

    Resampling instead of split_by_node keeps every rank busy whatever the shard count is.
    """
    def worker_seed() -> int:
        rank, _, worker, _ = pytorch_worker_info()
        return stream_seed(seed, rank, worker)

    def seeded_shuffle(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rng = random.Random(worker_seed() + 1)
        yield from wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=rng)(src)

    return wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, worker_seed=worker_seed, deterministic=True),
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        seeded_shuffle,
    )


def eval_stream(urls: list[str]) -> wds.DataPipeline:
    """Every sample once across ranks and workers, in shard order (sample i goes to share i mod n)."""
    def my_share(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rank, world, worker, workers = pytorch_worker_info()
        share, shares = rank * workers + worker, world * workers
        for i, sample in enumerate(src):
            if i % shares == share:
                yield sample

    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        my_share,
    )
