"""WebVid: the CSV of `videoid,contentUrl,duration,page_dir,name`, media downloaded to
`<media_root>/<page_dir>/<videoid>.mp4`. Pre-training only: shards, no annotation."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from snps3_ds.datasets.base import ManifestError, ReaderOptions, SourceItem, safe_key

COLUMNS = {"videoid", "name", "page_dir"}


def key(videoid: str) -> str:
    """The shard key of a WebVid video: its `videoid`, made safe."""
    return safe_key(videoid)


def read_items(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """One sample per row, `name` its caption."""
    with manifest.open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle)
        missing = COLUMNS - set(rows.fieldnames or [])
        if missing:
            raise ManifestError(f"{manifest}: WebVid CSV lacks column(s) {sorted(missing)}; "
                                f"expected a header with {sorted(COLUMNS)} (got {rows.fieldnames})")
        for row in rows:
            video = row["videoid"].strip()
            yield SourceItem(key=key(video), path=media_root / row["page_dir"].strip() / f"{video}.mp4",
                             captions=[row["name"].strip()] if row["name"] and row["name"].strip() else [],
                             source="webvid", kind="video")
