"""DiDeMo `{train,val,test}_data.json` ([{video, description, times, annotation_id}]), for shards and for
paragraph retrieval (DESIGN §4.4): a video's descriptions joined with " " in file order are its one text.
One parser serves both; videos are grouped by `key`, so a shard sample and an annotation item are the same
video."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snps3_ds.datasets.base import (BadRows, ReaderOptions, SourceItem, find_media, json_list, media_stem,
                                    retrieval_annotation, safe_key, split_name, text_field)
from snps3_ds.downstream.annotations import Annotation


def key(video: str) -> str:
    """The shard key of a DiDeMo video: its file name without a media extension, made safe."""
    return safe_key(media_stem(video))


@dataclass
class Video:
    """One video's moments: the file name as first written, and {description, times} in file order."""

    name: str
    moments: list[dict[str, Any]] = field(default_factory=list)

    def paragraph(self) -> str:
        return " ".join(m["description"] for m in self.moments)


def read_videos(path: Path, bad: BadRows) -> dict[str, Video]:
    """{key: Video} of the file; entries without a video or a description go to `bad`."""
    data = json_list(path, "a DiDeMo JSON list of {video, description, times}")
    videos: dict[str, Video] = {}
    for i, entry in enumerate(data):
        try:
            name, text = text_field(entry, "video"), text_field(entry, "description")
        except ValueError as err:
            bad.add(f"item {i}", f"{err} (expected {{video, description, times}})")
            continue
        videos.setdefault(key(name), Video(name)).moments.append({"description": text,
                                                                  "times": entry.get("times", [])})
    return videos


def read_items(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """One sample per video, the paragraph as its caption; the single descriptions and their 5-second segment
    `times` are kept in the json as `sentences`. A bad entry becomes a failed sample."""
    bad = BadRows(manifest)
    for name, video in read_videos(manifest, bad).items():
        yield SourceItem(key=name, path=find_media(media_root, [video.name, f"{video.name}.mp4"]),
                         captions=[video.paragraph()], source="didemo", kind="video",
                         extra={"video_id": video.name, "sentences": video.moments})
    yield from bad.as_items("didemo")


def read_retrieval(path: Path, split: str | None = None, skip_bad: bool = False) -> Annotation:
    """The paragraph-retrieval annotation; the split name comes from the file name unless given."""
    path = Path(path)
    bad = BadRows(path, skip_bad)
    videos = read_videos(path, bad)
    bad.finish()
    texts = {name: [video.paragraph()] for name, video in videos.items()}
    return retrieval_annotation(split or split_name(path, "didemo"), path, texts)
