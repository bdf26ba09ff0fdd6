"""Small JPEG frame strips of chosen videos, read from the evaluation shards, for the retrieval gallery.

Only the videos a page shows are read: each shard's index (the `.idx` beside it, or its tar headers) says
where a sample's members sit, so a video is read by seeking to it instead of streaming every shard. Frames
come from the loader's own CPU decoding (PyAV, decord as fallback) at the evaluation's frame positions (the
centre of each of `frames` equal segments, inside a json `start`/`end` trim).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from snps3_ds.data.decode.backends import make_decoder
from snps3_ds.data.errors import DecodeError
from snps3_ds.data.samples import media_member, sample_meta
from snps3_ds.data.stream.index import IndexedSample, index_shard
from snps3_ds.data.stream.shards import resolve_shards

log = logging.getLogger(__name__)

FRAMES = 4  # thumbnails per video
HEIGHT = 96  # pixels; larger frames are scaled down (aspect kept), smaller ones kept as they are


@dataclass
class Strips:
    """Per video key: the JPEG paths of its frames relative to the page, or why there are none."""

    frames: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # key -> reason (not in the shards, undecodable)


def locate(shard_specs: list[str], keys: set[str]) -> dict[str, tuple[str, IndexedSample]]:
    """(shard path, indexed sample) of each wanted key found; shards are indexed until all are found."""
    found: dict[str, tuple[str, IndexedSample]] = {}
    for url in resolve_shards(shard_specs):
        for sample in index_shard(url).samples:
            if sample.key in keys and sample.key not in found:
                found[sample.key] = (url, sample)
        if len(found) == len(keys):
            break
    return found


def read_sample(url: str, sample: IndexedSample) -> dict[str, bytes]:
    """The sample's members by extension, read at their offsets."""
    raw: dict[str, bytes] = {}
    with open(url, "rb") as handle:
        for member in sample.members:
            handle.seek(member.offset)
            raw[member.ext] = handle.read(member.size)
    return raw


def decode_frames(raw: dict[str, bytes], frames: int = FRAMES):
    """uint8 RGB [T, H, W, 3]: `frames` frames of a video (one of an image), as the evaluation samples them."""
    meta = sample_meta(raw)
    ext, data = media_member(raw)
    decoder = make_decoder("auto")
    return decoder.decode(data, ext, frames, False, random.Random(0), meta.get("start"), meta.get("end"))


def write_strips(shard_specs: list[str], keys: list[str], out_dir: Path, folder: str = "thumbs",
                 frames: int = FRAMES) -> Strips:
    """JPEGs `out_dir/folder/v<n>-<frame>.jpg` for each key (n: its position in `keys`, so any key string is a
    safe file name); a key that is not in the shards or cannot be decoded is recorded in `missing`."""
    from PIL import Image

    strips = Strips()
    (out_dir / folder).mkdir(parents=True, exist_ok=True)
    wanted = list(dict.fromkeys(keys))
    located = locate(shard_specs, set(wanted))
    for n, key in enumerate(wanted):
        if key not in located:
            strips.missing[key] = "not in the evaluation shards"
            continue
        try:
            video = decode_frames(read_sample(*located[key]), frames)
        except (DecodeError, OSError) as err:
            strips.missing[key] = f"undecodable ({err})"
            log.warning("gallery: no thumbnails for %s: %s", key, err)
            continue
        paths = []
        for t, frame in enumerate(video):
            image = Image.fromarray(frame)
            image.thumbnail((HEIGHT * 4, HEIGHT))  # shrinks only, keeping the aspect ratio
            name = f"{folder}/v{n:04d}-{t}.jpg"
            image.save(out_dir / name, quality=85)
            paths.append(name)
        strips.frames[key] = paths
    return strips
