"""What every annotation reader yields: one media file (or in-memory bytes) and its captions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snps3_ds.data.samples import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
MEDIA_SUFFIXES = tuple("." + e for e in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)


class ManifestError(ValueError):
    """An annotation file that does not have the expected layout; names the file, line/key and the form."""


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


def safe_key(text: str) -> str:
    """A WebDataset/DALI-safe key: no dots (readers split `key.ext` at the first dot), no slashes."""
    key = _UNSAFE.sub("_", text.strip())
    if not key:
        raise ManifestError(f"cannot make a sample key from {text!r}")
    return key


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


def load_json_manifest(manifest: Path) -> Any:
    """A JSON annotation file, or a ManifestError naming it."""
    try:
        return json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ManifestError(f"{manifest}: not JSON ({err})") from err
