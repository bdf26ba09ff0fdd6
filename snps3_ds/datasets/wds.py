"""Existing WebDataset shards as input (e.g. video2dataset / img2dataset output), to rebuild them in our layout
(json captions, codec and frame facts, DALI index), optionally re-encoded. Shards only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import webdataset as wds

from snps3_ds.data.errors import DecodeError
from snps3_ds.data.samples import media_member, sample_meta
from snps3_ds.data.stream.shards import resolve_shards
from snps3_ds.datasets.base import ReaderOptions, SourceItem, kind_of, safe_key


def key(sample_key: str) -> str:
    """The key a re-sharded sample keeps: its `__key__`, made safe (a dot or slash in it would break readers)."""
    return safe_key(sample_key)


def read_items(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """Samples of the shards `manifest` names (a tar, a glob, a brace pattern or a shards.json prefix)."""
    for url in resolve_shards([str(manifest)]):
        for raw in wds.WebDataset(url, shardshuffle=False, empty_check=False):
            name = key(raw["__key__"])
            try:
                captions = sample_meta(raw)["captions"]
            except DecodeError as err:
                captions = [] if err.reason == "no_caption" else None
                if captions is None:
                    yield SourceItem(key=name, path=None, captions=[], source=Path(url).stem,
                                     error=f"{url}: {err}")
                    continue
            try:
                ext, data = media_member(raw)
            except DecodeError as err:
                yield SourceItem(key=name, path=None, captions=captions, source=Path(url).stem, error=f"{url}: {err}")
                continue
            yield SourceItem(key=name, path=None, captions=captions, source=Path(url).stem, kind=kind_of(f"x.{ext}"),
                             data=data, ext=ext)
