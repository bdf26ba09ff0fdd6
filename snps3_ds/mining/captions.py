"""Stream captions out of every input form the mining script accepts, one caption string at a time.

Inputs (DESIGN §3.4): our WebDataset shards (`X.shards.json`, a prefix `DIR/train`, tars, globs or brace
patterns: the `json` member's `captions`, else a `txt` member as video2dataset writes), JSONL and CSV/TSV
caption files (`caption` or `captions` key/column), and Flickr8k-style `image#n<TAB>caption` text files.
Nothing is held in memory beyond the current line or sample, so a corpus of millions streams.
"""

from __future__ import annotations

import csv
import glob
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import webdataset as wds

from snps3_ds.data.stream.shards import resolve_shards

CAPTION_KEYS = ("captions", "caption", "sentence")  # `sentence`: MSR-VTT annotation CSVs
_FLICKR_LINE = re.compile(r"^\S+#\d+\s+(.*)$")  # `image.jpg#0<TAB>caption` (the first line has a space)
_CAPTION_FILES = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "csv", ".txt": "lines"}


class CaptionSourceError(ValueError):
    """An input that is not a caption file or shard set; names the path and the expected forms."""


def iter_captions(inputs: Iterable[str]) -> Iterator[str]:
    """Every non-empty caption of every input, in input order."""
    for spec in inputs:
        for path, kind in _expand(str(spec)):
            yield from _READERS[kind](path)


def _expand(spec: str) -> list[tuple[str, str]]:
    """(path, kind) pairs: caption files by extension; everything else goes to the shard resolver."""
    kind = _CAPTION_FILES.get(Path(spec).suffix.lower())
    if kind and Path(spec).is_file():
        return [(spec, kind)]
    if any(ch in spec for ch in "*?[") and not spec.endswith(".tar"):
        matches = sorted(glob.glob(spec))
        if not matches:
            raise CaptionSourceError(f"input {spec!r} matches no file")
        return [pair for match in matches for pair in _expand(match)]
    try:
        return [(url, "shard") for url in resolve_shards([spec])]
    except FileNotFoundError as err:
        raise CaptionSourceError(
            f"input {spec!r}: not a caption file (.jsonl, .csv, .tsv, image#n<TAB>caption .txt) nor a shard set "
            f"({err})") from err


def _clean(values: Any) -> Iterator[str]:
    """Captions from a string or a list of strings; blanks dropped."""
    for value in values if isinstance(values, list) else [values]:
        if isinstance(value, str) and value.strip():
            yield value.strip()


def _read_jsonl(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CaptionSourceError(f"{path}:{number}: not a JSON object ({err})") from err
            key = next((k for k in CAPTION_KEYS if isinstance(row, dict) and k in row), None)
            if key is None:
                raise CaptionSourceError(f"{path}:{number}: expected a JSON object with one of the keys {CAPTION_KEYS}")
            yield from _clean(row[key])


def _read_csv(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        sample = handle.read(8192)
        handle.seek(0)
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        reader = csv.DictReader(handle, dialect=dialect)
        key = next((k for k in CAPTION_KEYS if k in (reader.fieldnames or [])), None)
        if key is None:
            raise CaptionSourceError(f"{path}: expected a header with one of the columns {CAPTION_KEYS}, "
                                     f"found {reader.fieldnames}")
        for row in reader:
            value = row.get(key) or ""
            if key == "captions" and value.lstrip().startswith("["):
                value = json.loads(value)  # a JSON list of captions in one cell
            yield from _clean(value)


def _read_lines(path: str) -> Iterator[str]:
    """`image#n<TAB>caption` lines (Flickr8k/30k token files); other lines are taken whole."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = _FLICKR_LINE.match(line.strip())
            yield from _clean(match.group(1) if match else line)


def _read_shard(url: str) -> Iterator[str]:
    """Captions of one tar: the `json` member's `captions` (our shards), else a `txt` member."""
    wanted = lambda name: name.endswith((".json", ".txt"))  # noqa: E731 - skip media bytes
    pipeline = wds.DataPipeline(wds.SimpleShardList([url]),
                                wds.tarfile_to_samples(handler=wds.warn_and_continue, select_files=wanted))
    for sample in pipeline:
        meta = _json_member(sample)
        key = next((k for k in CAPTION_KEYS if k in meta), None)
        if key is not None:
            yield from _clean(meta[key])
        elif "txt" in sample:
            yield from _clean(sample["txt"].decode("utf-8", errors="replace"))


def _json_member(sample: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


_READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "lines": _read_lines, "shard": _read_shard}
