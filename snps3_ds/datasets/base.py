"""What the dataset modules share: the item a shard reader yields, sample keys, the one error for a bad dataset
file, file loading, the retrieval annotation, and the bad-row collector.

Bad rows: a file that is not in its expected layout at all (not JSON, wrong header) raises `ManifestError` at
once. Rows with a missing or malformed field are collected in `BadRows`; `finish` then raises one
`ManifestError` giving their count and the first few (file, line or item, key, expected form), or, with
`skip_bad` (--skip-bad), leaves them out and logs the count and the first few as a warning. A shard reader
instead yields them as failed samples, which the builder skips and lists in shards.json.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snps3_ds.data.samples import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from snps3_ds.downstream.annotations import Annotation

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
MEDIA_SUFFIXES = tuple("." + e for e in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)
_SHOWN = 5  # bad rows quoted in a message


class ManifestError(ValueError):
    """A dataset file (annotation file, split list, mapping) that does not have its expected layout; the message
    names the file, the line/item/key and the expected form."""


@dataclass
class SourceItem:
    """One sample to build: where its media is, what describes it, and which part of it to keep."""

    key: str
    path: Path | None
    captions: list[str]
    source: str
    kind: str = "video"  # "video" | "image"
    start: float | None = None
    end: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # task fields kept in the sample json
    data: bytes | None = None  # media bytes when the input is already in memory (re-sharding a tar)
    ext: str | None = None  # media extension when `data` is given
    error: str | None = None  # set when this row of the annotation file could not be read


@dataclass(frozen=True)
class ReaderOptions:
    """Format-specific inputs beyond the manifest and the media folder."""

    url_map: Path | None = None  # CC3M: url -> local file (JSON object or `url<TAB>path` lines)
    split: str | None = None  # MSR-VTT data json: keep only this split (train / validate / test)


# --- keys ---------------------------------------------------------------------------------------
def safe_key(text: str) -> str:
    """A WebDataset/DALI-safe key: no dots (readers split `key.ext` at the first dot), no slashes."""
    key = _UNSAFE.sub("_", text.strip())
    if not key:
        raise ManifestError(f"cannot make a sample key from {text!r}")
    return key


def media_stem(name: str) -> str:
    """`name` without a known media extension ('a.mov' -> 'a'); other names as they are."""
    return Path(name).stem if Path(name).suffix.lower() in MEDIA_SUFFIXES else name


def kind_of(path: str | Path) -> str:
    """`image` for image file extensions, `video` otherwise."""
    return "image" if Path(str(path)).suffix.lower().lstrip(".") in IMAGE_EXTENSIONS else "video"


def find_media(root: Path, names: list[str], suffixes: tuple[str, ...] = MEDIA_SUFFIXES) -> Path:
    """The first of root/name (as given, then with each known suffix) that exists; else root/names[0],
    which the builder reports as missing_file."""
    for name in names:
        candidate = root / name
        if candidate.is_file():
            return candidate
        stem = str(candidate.with_suffix("") if candidate.suffix.lower() in MEDIA_SUFFIXES else candidate)
        for suffix in suffixes:
            if Path(stem + suffix).is_file():
                return Path(stem + suffix)
    return root / names[0]


def group_captions(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """{id: [captions]} in first-seen order from (id, caption) pairs, dropping exact duplicates."""
    grouped: dict[str, list[str]] = {}
    for ident, caption in pairs:
        captions = grouped.setdefault(ident, [])
        if caption not in captions:
            captions.append(caption)
    return grouped


# --- reading files ------------------------------------------------------------------------------
def read_lines(path: Path, expected: str) -> list[str]:
    """The lines of a text file, or a ManifestError naming it and what it should have been."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ManifestError(f"{path}: file not found (expected {expected})") from None


def load_json(path: Path, expected: str) -> Any:
    """A JSON file, or a ManifestError naming it and what it should have been."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: file not found (expected {expected})") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not JSON ({err}); expected {expected}") from None


def json_list(path: Path, expected: str) -> list[Any]:
    """A JSON file holding a list."""
    data = load_json(path, expected)
    if not isinstance(data, list):
        raise ManifestError(f"{path}: expected {expected}, got a JSON {type(data).__name__}")
    return data


def video_list(path: Path) -> list[tuple[int, str]]:
    """(line, video id) of a split list: a csv with a `video_id` column (CLIP4Clip/Frozen
    MSRVTT_train.9k.csv) or plain lines of one id each (train_list_jsfusion.txt, MSVD test_list.txt)."""
    lines = read_lines(path, "a video list")
    if lines and "video_id" in next(csv.reader([lines[0]])):
        rows = csv.DictReader(lines)
        return [(n, row["video_id"].strip()) for n, row in enumerate(rows, 2) if row.get("video_id", "").strip()]
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


def text_field(row: Any, key: str) -> str:
    """A non-empty stripped string field, or ValueError naming the key."""
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"key {key!r}: expected a non-empty string, got {value!r}")
    return value.strip()


def row_problem(err: Exception) -> str:
    """A row error as text; a KeyError reads as the missing key."""
    return f"missing key {err}" if isinstance(err, KeyError) else str(err)


def split_name(path: Path, prefix: str) -> str:
    """`<prefix>_train|val|test` from a file name such as `train_qa.json` or `test_data.json`."""
    words = re.split(r"[^a-z0-9]+", Path(path).name.lower())
    for split in ("train", "val", "test"):
        if split in words or (split == "val" and "validate" in words):
            return f"{prefix}_{split}"
    raise ManifestError(f"{path}: cannot tell the split (train/val/test) from the file name; "
                        f"pass a split name (--split-name)")


def retrieval_annotation(split: str, source: Path, texts: dict[str, list[str]]) -> Annotation:
    """A retrieval annotation with one item per video key; a ManifestError when no video has text."""
    if not texts:
        raise ManifestError(f"{source}: no videos with text found")
    items = [{"video": key, "texts": t} for key, t in texts.items()]
    return Annotation("retrieval", split, items, source=str(source))


class BadRows:
    """Collects per-row problems of one file. An annotation reader calls `finish`, which raises them, or logs
    them when `skip_bad`; a shard reader yields them as failed samples (`as_items`), which the builder lists
    in shards.json."""

    def __init__(self, path: Path, skip_bad: bool = False) -> None:
        self.path, self.skip_bad = path, skip_bad
        self.problems: list[tuple[str, str]] = []  # (where, message)

    def add(self, where: str, message: str) -> None:
        self.problems.append((where, message))

    def finish(self) -> None:
        if not self.problems:
            return
        lines = [f"{where}: {message}" for where, message in self.problems[:_SHOWN]]
        shown = "\n  ".join(lines)
        more = f"\n  ... and {len(self.problems) - _SHOWN} more" if len(self.problems) > _SHOWN else ""
        if not self.skip_bad:
            raise ManifestError(f"{self.path}: {len(self.problems)} bad row(s) (skip them with --skip-bad):"
                                f"\n  {shown}{more}")
        log.warning("%s: skipped %d bad row(s):\n  %s%s", self.path, len(self.problems), shown, more)

    def as_items(self, source: str) -> list[SourceItem]:
        """The problems as samples that fail with bad_manifest_line, keyed by where they are."""
        return [SourceItem(key=safe_key(where), path=None, captions=[], source=source,
                           error=f"{self.path}: {where}: {message}") for where, message in self.problems]
