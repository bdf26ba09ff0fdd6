"""The shard builder's formats: `--format` name -> the reader that yields its SourceItems.

    items = read_manifest("msrvtt_jsfusion", Path("MSRVTT_JSFUSION_test.csv"), Path("videos/"))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from snps3_ds.datasets import cc3m, coco, didemo, generic, jsfusion, msrvtt, msvd, vg, wds, webvid
from snps3_ds.datasets.base import ManifestError, ReaderOptions, SourceItem

Reader = Callable[[Path, Path, ReaderOptions], Iterator[SourceItem]]
FORMATS: dict[str, Reader] = {
    "jsonl": generic.read_jsonl,
    "csv": generic.read_csv,
    "webvid": webvid.read_items,
    "cc3m": cc3m.read_items,
    "coco": coco.read_items,
    "vg": vg.read_items,
    "msrvtt": msrvtt.read_items,
    "msrvtt_jsfusion": jsfusion.read_items,
    "msvd": msvd.read_items,
    "didemo": didemo.read_items,
    "wds": wds.read_items,
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
