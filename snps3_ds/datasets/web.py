"""Web-crawled pre-training sets: WebVid (video) and Conceptual Captions 3M (image)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from snps3_ds.datasets.base import ManifestError, ReaderOptions, SourceItem, safe_key

WEBVID_COLUMNS = {"videoid", "name", "page_dir"}


def read_webvid(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """WebVid CSV (`videoid,contentUrl,duration,page_dir,name`); media at `<media_root>/<page_dir>/<videoid>.mp4`."""
    with manifest.open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle)
        missing = WEBVID_COLUMNS - set(rows.fieldnames or [])
        if missing:
            raise ManifestError(f"{manifest}: WebVid CSV lacks column(s) {sorted(missing)}; "
                                f"expected a header with {sorted(WEBVID_COLUMNS)} (got {rows.fieldnames})")
        for row in rows:
            video = row["videoid"].strip()
            yield SourceItem(key=safe_key(video), path=media_root / row["page_dir"].strip() / f"{video}.mp4",
                             captions=[row["name"].strip()] if row["name"] and row["name"].strip() else [],
                             source="webvid", kind="video")


def load_url_map(path: Path) -> dict[str, str]:
    """url -> local path, from a JSON object or `url<TAB>path` lines (what a downloader logged)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        mapping = json.loads(text)
        if not all(isinstance(v, str) for v in mapping.values()):
            raise ManifestError(f"{path}: expected a JSON object of url -> file path strings")
        return mapping
    mapping = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 2:
                raise ManifestError(f"{path}:{number}: expected `url<TAB>path`, got {line[:80]!r}")
            mapping[parts[0]] = parts[1]
    return mapping


def read_cc3m(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """CC3M TSV (`caption<TAB>url` per line, no header); images found through --url-map."""
    if options.url_map is None:
        raise ManifestError(f"{manifest}: the cc3m format needs --url-map (url -> downloaded file)")
    urls = load_url_map(options.url_map)
    with manifest.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            parts = line.rstrip("\r\n").split("\t")
            if number == 1 and parts[:2] == ["caption", "url"]:
                continue
            key = f"cc3m_{number:09d}"
            if len(parts) != 2:
                yield SourceItem(key=key, path=None, captions=[], source="cc3m", kind="image",
                                 error=f"{manifest}:{number}: expected `caption<TAB>url`")
                continue
            caption, url = parts
            local = urls.get(url)
            yield SourceItem(key=key, path=media_root / local if local else None, captions=[caption.strip()],
                             source="cc3m", kind="image", extra={"url": url},
                             error=None if local else f"url not in --url-map: {url[:120]}")
