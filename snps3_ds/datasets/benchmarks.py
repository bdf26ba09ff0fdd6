"""Video-text benchmarks: MSR-VTT (data json, JSFUSION 1k-A csv), MSVD and DiDeMo annotation files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from snps3_ds.datasets.base import (load_json_manifest, MEDIA_SUFFIXES, ManifestError, ReaderOptions, SourceItem, find_media,
                                         group_captions, safe_key)


def read_msrvtt(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """`MSRVTT_data.json` ({videos: [{video_id, split}], sentences: [{video_id, caption}]}); every caption of a
    video in one sample; `--split` keeps one split; media at `<media_root>/<video_id>.mp4`."""
    data = load_json_manifest(manifest)
    if not isinstance(data, dict) or "videos" not in data or "sentences" not in data:
        raise ManifestError(f"{manifest}: expected MSRVTT_data.json with 'videos' and 'sentences'")
    captions = group_captions([(s["video_id"], s["caption"].strip()) for s in data["sentences"]])
    for video in data["videos"]:
        if options.split and video.get("split") != options.split:
            continue
        ident = video["video_id"]
        yield SourceItem(key=safe_key(ident), path=find_media(media_root, [f"{ident}.mp4"]),
                         captions=captions.get(ident, []), source="msrvtt", kind="video",
                         extra={"video_id": ident, "split": video.get("split")})


def read_msrvtt_jsfusion(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """The JSFUSION 1k-A csv: `key;vid_key;video_id;sentence`, semicolon separated, CRLF line ends, one caption
    per video. The sentence is the last field and is split off at most three times, so a ';' in it is kept."""
    lines = manifest.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip().split(";")[:3] != ["key", "vid_key", "video_id"]:
        raise ManifestError(f"{manifest}: expected a header `key;vid_key;video_id;sentence`, got {lines[:1]}")
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split(";", 3)
        if len(parts) != 4:
            yield SourceItem(key=f"line_{number}", path=None, captions=[], source="msrvtt",
                             error=f"{manifest}:{number}: expected 4 ';'-separated fields, got {len(parts)}")
            continue
        ident = parts[2].strip()
        yield SourceItem(key=safe_key(ident), path=find_media(media_root, [f"{ident}.mp4"]),
                         captions=[parts[3].strip()] if parts[3].strip() else [], source="msrvtt", kind="video",
                         extra={"video_id": ident})


def read_msvd(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """MSVD descriptions (`<video> <caption>` per line, `#` comments); captions grouped per video; media at
    `<media_root>/<video>.avi` (or another video extension)."""
    pairs = []
    with manifest.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            video, _, caption = text.partition(" ")
            if caption.strip():
                pairs.append((video, caption.strip()))
    if not pairs:
        raise ManifestError(f"{manifest}: no `<video> <caption>` lines found")
    for video, captions in group_captions(pairs).items():
        yield SourceItem(key=safe_key(video), path=find_media(media_root, [f"{video}.avi"]), captions=captions,
                         source="msvd", kind="video", extra={"video_id": video})


def read_didemo(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """DiDeMo `{train,val,test}_data.json` ([{video, description, times, annotation_id}]). For paragraph
    retrieval (DESIGN §4.4) a video's descriptions are joined into one caption; the single descriptions and
    their 5-second segment `times` are kept in the json as `sentences`."""
    data = load_json_manifest(manifest)
    if not isinstance(data, list) or (data and not {"video", "description"} <= set(data[0])):
        raise ManifestError(f"{manifest}: expected DiDeMo annotations, a JSON list of {{video, description, times}}")
    moments: dict[str, list[dict[str, Any]]] = {}
    for entry in data:
        moments.setdefault(entry["video"], []).append(
            {"description": entry["description"].strip(), "times": entry.get("times", [])})
    for video, parts in moments.items():
        paragraph = " ".join(p["description"] for p in parts if p["description"])
        stem = Path(video).stem if Path(video).suffix.lower() in MEDIA_SUFFIXES else video
        yield SourceItem(key=safe_key(stem), path=find_media(media_root, [video, f"{video}.mp4"]),
                         captions=[paragraph] if paragraph else [], source="didemo", kind="video",
                         extra={"video_id": video, "sentences": parts})
