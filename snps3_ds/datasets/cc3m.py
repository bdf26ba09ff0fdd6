"""Conceptual Captions 3M: the TSV of `caption<TAB>url` lines (no header), images found through --url-map (what a
downloader logged: url -> local file). Pre-training only: shards, no annotation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from snps3_ds.datasets.base import ManifestError, ReaderOptions, SourceItem


def key(line: int) -> str:
    """The shard key of the image on TSV line `line` (1-based): CC3M has no ids, so the line is the id."""
    return f"cc3m_{line:09d}"


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


def read_items(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """One image sample per line; a url the map lacks is a failed sample."""
    if options.url_map is None:
        raise ManifestError(f"{manifest}: the cc3m format needs --url-map (url -> downloaded file)")
    urls = load_url_map(options.url_map)
    with manifest.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            parts = line.rstrip("\r\n").split("\t")
            if number == 1 and parts[:2] == ["caption", "url"]:
                continue
            if len(parts) != 2:
                yield SourceItem(key=key(number), path=None, captions=[], source="cc3m", kind="image",
                                 error=f"{manifest}:{number}: expected `caption<TAB>url`")
                continue
            caption, url = parts
            local = urls.get(url)
            yield SourceItem(key=key(number), path=media_root / local if local else None,
                             captions=[caption.strip()], source="cc3m", kind="image", extra={"url": url},
                             error=None if local else f"url not in --url-map: {url[:120]}")
