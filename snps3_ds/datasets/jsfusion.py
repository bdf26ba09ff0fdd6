"""MSRVTT_JSFUSION_test.csv, the MSR-VTT 1k-A test: `key,vid_key,video_id,sentence`, ',' or ';' separated
(the separator is read from the header), CRLF line ends, one caption per row. One parser serves the shard
reader and the 1k-A annotation; video ids become keys through `msrvtt.key`."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from snps3_ds.datasets import msrvtt
from snps3_ds.datasets.base import (BadRows, ManifestError, ReaderOptions, SourceItem, find_media, read_lines,
                                    retrieval_annotation)
from snps3_ds.downstream.annotations import Annotation

HEADER = ["key", "vid_key", "video_id"]


@dataclass(frozen=True)
class Row:
    """One csv row: its line number and video id and sentence, or what is wrong with it."""

    line: int
    video_id: str = ""
    sentence: str = ""
    error: str | None = None


def read_rows(path: Path) -> Iterator[Row]:
    """The rows of the csv. The sentence is the last field: with ';' the line is split at most three times,
    with ',' csv quoting applies, and a separator left in the sentence is kept."""
    lines = read_lines(path, "MSRVTT_JSFUSION_test.csv")
    sep = ";" if lines and ";" in lines[0] else ","
    if not lines or [f.strip() for f in lines[0].split(sep)][:3] != HEADER:
        raise ManifestError(f"{path}: expected a header `key,vid_key,video_id,sentence` (',' or ';'), "
                            f"got {lines[:1]}")
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = next(csv.reader([line], delimiter=sep)) if sep == "," else line.split(sep, 3)
        if len(parts) >= 4:
            parts = parts[:3] + [sep.join(parts[3:])]
        if len(parts) != 4 or not parts[2].strip():
            yield Row(number, error=f"expected 4 {sep!r}-separated fields `key{sep}vid_key{sep}video_id{sep}"
                                    f"sentence` with a video_id, got {len(parts)} field(s)")
            continue
        yield Row(number, parts[2].strip(), parts[3].strip())


def read_items(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """One sample per row (a row without a sentence fails as empty_caption); media at `<media_root>/<key>.mp4`."""
    for row in read_rows(manifest):
        if row.error:
            yield SourceItem(key=f"line_{row.line}", path=None, captions=[], source="msrvtt",
                             error=f"{manifest}:{row.line}: {row.error}")
            continue
        name = msrvtt.key(row.video_id)
        yield SourceItem(key=name, path=find_media(media_root, [f"{name}.mp4"]),
                         captions=[row.sentence] if row.sentence else [], source="msrvtt", kind="video",
                         extra={"video_id": row.video_id})


def read_retrieval(path: Path, split: str = "msrvtt_1ka", skip_bad: bool = False) -> Annotation:
    """The 1k-A retrieval annotation: each video's sentences (one per video in the public file)."""
    path = Path(path)
    bad, texts = BadRows(path, skip_bad), {}
    for row in read_rows(path):
        if row.error or not row.sentence:
            bad.add(f"line {row.line}", row.error or "expected a sentence after the video_id")
            continue
        captions = texts.setdefault(msrvtt.key(row.video_id), [])
        if row.sentence not in captions:
            captions.append(row.sentence)
    bad.finish()
    return retrieval_annotation(split, path, texts)
