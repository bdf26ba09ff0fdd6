"""Annotation readers, one per dataset layout, all yielding SourceItems (a media file and its captions).

    items = read_manifest("msrvtt_jsfusion", Path("MSRVTT_JSFUSION_test.csv"), Path("videos/"))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from snps3_ds.datasets.base import ManifestError, ReaderOptions, SourceItem
from snps3_ds.datasets.benchmarks import read_didemo, read_msrvtt, read_msrvtt_jsfusion, read_msvd
from snps3_ds.datasets.generic import read_csv, read_jsonl
from snps3_ds.datasets.images import read_coco, read_visual_genome
from snps3_ds.datasets.shards import read_webdataset
from snps3_ds.datasets.web import read_cc3m, read_webvid

__all__ = ["FORMATS", "ManifestError", "ReaderOptions", "SourceItem", "read_manifest"]

Reader = Callable[[Path, Path, ReaderOptions], Iterator[SourceItem]]
FORMATS: dict[str, Reader] = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "webvid": read_webvid,
    "cc3m": read_cc3m,
    "coco": read_coco,
    "vg": read_visual_genome,
    "msrvtt": read_msrvtt,
    "msrvtt_jsfusion": read_msrvtt_jsfusion,
    "msvd": read_msvd,
    "didemo": read_didemo,
    "wds": read_webdataset,
}


def read_manifest(fmt: str, manifest: Path, media_root: Path | None = None,
                  options: ReaderOptions = ReaderOptions()) -> Iterator[SourceItem]:
    """SourceItems of `manifest` read as `fmt`, with keys made unique (`k`, `k_2`, `k_3` ...) in input order.
    `media_root` defaults to the manifest's folder."""
    if fmt not in FORMATS:
        raise ManifestError(f"--format {fmt!r} is not known; choose one of {', '.join(FORMATS)}")
    if fmt != "wds" and not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    seen: dict[str, int] = {}
    for item in FORMATS[fmt](manifest, media_root or manifest.parent, options):
        count = seen.get(item.key, 0) + 1
        seen[item.key] = count
        if count > 1:
            item.key = f"{item.key}_{count}"
        yield item
