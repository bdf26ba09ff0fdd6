"""Generic manifests: JSONL or CSV/TSV rows with a media path and a caption (or captions), optional start/end.
Shards only: an annotation for a downstream task is built from a benchmark's own files (the other modules).

Accepted column names (first present wins), so manifests from other tools load without editing:
  path:     path, file, video, image, filename, media
  captions: captions (list, or a JSON list in CSV), caption, sentence, text, label
  key:      key, id, video_id, image_id (default: the file name without extension)
  start/end seconds; source; kind (video|image, default by extension); task fields are kept.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from snps3_ds.datasets.base import ManifestError, ReaderOptions, SourceItem, kind_of, safe_key

PATH_FIELDS = ("path", "file", "video", "image", "filename", "media")
CAPTION_FIELDS = ("captions", "caption", "sentence", "text", "label")
KEY_FIELDS = ("key", "id", "video_id", "image_id")
TASK_FIELDS = ("question", "answer", "options", "answer_idx", "video_id")


def key(ident: Any, path: str) -> str:
    """The shard key of a row: its key column when given, else the media file name without extension."""
    return safe_key(str(ident if ident is not None else Path(path).stem))


def _first(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    return next((row[n] for n in names if row.get(n) not in (None, "")), None)


def _captions(value: Any) -> list[str]:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    values = value if isinstance(value, list) else [value]
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def _seconds(value: Any, where: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ManifestError(f"{where}: start/end must be seconds, got {value!r}") from err


def item_from_row(row: dict[str, Any], media_root: Path, source: str, where: str) -> SourceItem:
    """One manifest row -> SourceItem; a row without a path becomes an item carrying `error`."""
    path = _first(row, PATH_FIELDS)
    if not isinstance(path, str):
        return SourceItem(key=f"row_{where.rsplit(':', 1)[-1]}", path=None, captions=[], source=source,
                          error=f"{where}: no media path (expected one of {', '.join(PATH_FIELDS)})")
    ident = _first(row, KEY_FIELDS)
    try:
        start, end = _seconds(row.get("start"), where), _seconds(row.get("end"), where)
    except ManifestError as err:
        return SourceItem(key=key(ident, path), path=None, captions=[], source=source, error=str(err))
    extra = {k: row[k] for k in TASK_FIELDS if row.get(k) not in (None, "")}
    return SourceItem(key=key(ident, path), path=media_root / path,
                      captions=_captions(_first(row, CAPTION_FIELDS)), source=str(row.get("source") or source),
                      kind=str(row.get("kind") or kind_of(path)), start=start, end=end, extra=extra)


def read_jsonl(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """One JSON object per line."""
    with manifest.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{manifest}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield SourceItem(key=f"line_{number}", path=None, captions=[], source=manifest.stem,
                                 error=f"{where}: not JSON ({err.msg})")
                continue
            if not isinstance(row, dict):
                raise ManifestError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
            yield item_from_row(row, media_root, manifest.stem, where)


def read_csv(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """A header row, then one row per sample; the delimiter (, ; TAB |) is taken from the header."""
    with manifest.open(encoding="utf-8", newline="") as handle:
        header = handle.readline()
        delimiter = max(",;\t|", key=header.count)
        columns = next(csv.reader([header], delimiter=delimiter))
        if not set(columns) & set(PATH_FIELDS):
            raise ManifestError(f"{manifest}: header {columns} has no media path column "
                                f"(expected one of {', '.join(PATH_FIELDS)})")
        for number, row in enumerate(csv.DictReader(handle, fieldnames=columns, delimiter=delimiter), 2):
            yield item_from_row(row, media_root, manifest.stem, f"{manifest}:{number}")
