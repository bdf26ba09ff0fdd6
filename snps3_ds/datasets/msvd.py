"""MSVD: AllVideoDescriptions.txt (`<video> <caption>` lines, `#` comments) for shards and, with a split list,
retrieval; MSVD-QA, whose `vid<N>` ids youtube_mapping.txt maps to the MSVD video names. Every name becomes a
shard key through `key`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from snps3_ds.datasets import qa
from snps3_ds.datasets.base import (BadRows, ManifestError, ReaderOptions, SourceItem, find_media, group_captions,
                                    read_lines, retrieval_annotation, safe_key, split_name, video_list)
from snps3_ds.downstream.annotations import Annotation

QA_TOP_ANSWERS = 1000  # REFERENCE §5.2 num_labels
_VID = re.compile(r"vid\d+")


def key(video: str) -> str:
    """The shard key of an MSVD video name such as '-4wsuPCjDBc_5_15'."""
    return safe_key(video)


def descriptions(path: Path) -> dict[str, list[str]]:
    """{video name: captions} in file order, exact duplicates dropped; lines without a caption are ignored."""
    pairs = []
    for line in read_lines(path, "MSVD `<video> <caption>` lines"):
        video, _, caption = line.strip().partition(" ")
        if video and not video.startswith("#") and caption.strip():
            pairs.append((video, caption.strip()))
    if not pairs:
        raise ManifestError(f"{path}: no `<video> <caption>` lines found")
    return group_captions(pairs)


def read_items(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """One sample per video with all its captions; media at `<media_root>/<video>.avi` (or another video
    extension)."""
    for video, captions in descriptions(manifest).items():
        yield SourceItem(key=key(video), path=find_media(media_root, [f"{video}.avi"]), captions=captions,
                         source="msvd", kind="video", extra={"video_id": video})


def read_retrieval(captions_path: Path, split_list: Path, split: str | None = None,
                   skip_bad: bool = False) -> Annotation:
    """MSVD captions + a split list of video names (e.g. test_list.txt): many captions per video."""
    captions, split_list = descriptions(Path(captions_path)), Path(split_list)
    bad, texts = BadRows(split_list, skip_bad), {}
    for line, video in video_list(split_list):
        if video not in captions:
            bad.add(f"line {line}", f"video {video!r} has no captions in {Path(captions_path).name}")
        else:
            texts[key(video)] = captions[video]
    bad.finish()
    return retrieval_annotation(split or split_name(split_list, "msvd"), split_list, texts)


def read_youtube_mapping(path: Path) -> dict[str, str]:
    """MSVD-QA youtube_mapping.txt: `<youtube name> vid<N>` lines -> {"vid<N>": youtube name}."""
    mapping = {}
    for number, line in enumerate(read_lines(path, "`<youtube name> vid<N>` lines"), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not _VID.fullmatch(fields[1]):
            raise ManifestError(f"{path}: line {number}: expected `<youtube name> vid<N>`, got {line!r}")
        mapping[fields[1]] = fields[0]
    if not mapping:
        raise ManifestError(f"{path}: no `<youtube name> vid<N>` lines found")
    return mapping


def read_qa(path: Path, youtube_mapping: Path, split: str | None = None, answers: list[str] | None = None,
            top_n: int = QA_TOP_ANSWERS, skip_bad: bool = False) -> Annotation:
    """MSVD-QA {train,val,test}_qa.json; video_id N is `vid<N>` in youtube_mapping.txt, whose YouTube
    name is the MSVD video (and, through `key`, the shard key)."""
    path, mapping = Path(path), read_youtube_mapping(Path(youtube_mapping))

    def key_of(video_id: Any) -> str:
        name = f"vid{video_id}" if str(video_id).isdigit() else str(video_id)
        if name not in mapping:
            raise ValueError(f"key 'video_id': {video_id!r} is not in {Path(youtube_mapping).name}")
        return key(mapping[name])

    return qa.read_qa(path, key_of, split or split_name(path, "msvd_qa"), answers, top_n, skip_bad)
