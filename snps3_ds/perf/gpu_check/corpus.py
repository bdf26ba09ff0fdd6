"""Shards the check builds on the fly from the demo generator: videos at real pre-training sizes (224-256 px,
GOP 8) in H.264 and VP9, JPEG images for the image recipe (PVT), and a significant-word table for MSSM/LVWM.

Why generated: the node is air-gapped and the check must not depend on any dataset; the demo generator is
deterministic, takes seconds on many cores, and its clips have the codecs, GOP and sizes the loaders meet.
The significance table ranks caption words by frequency (no POS tagging: spaCy is not on the node); MSSM
masks and LVWM scores the same number of tokens either way, so the training cost is the recipe's.
"""

from __future__ import annotations

import collections
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snps3_ds.demo.corpus import (ClipConfig, ShardLayout, clip_rng, make_captions, make_demo_corpus, render_clip,
                                  sample_scene)
from snps3_ds.sharding.writer import ShardWriter

VIDEO_SIDES = (224, 240, 256)
IMAGE_SIDES = (384, 448, 512)


@dataclass(frozen=True)
class CorpusSpec:
    """How many clips (per codec) and images, and how long the clips are."""

    videos: int
    images: int
    frames: int = 32
    codecs: tuple[str, ...] = ("h264", "vp9")


def build_videos(out: Path, codec: str, count: int, frames: int, workers: int | None = None) -> Path:
    """`count` clips of `frames` frames (8 fps, GOP 8) at 224-256 px; returns the shard prefix."""
    folder = out / codec
    prefix = folder / "train"
    if not Path(f"{prefix}.shards.json").is_file():
        make_demo_corpus(folder, train=count, test=0, seed=7, workers=workers or os.cpu_count() or 1,
                         clips=ClipConfig(codec=codec, frames=frames, sides=VIDEO_SIDES),
                         shards=ShardLayout(max(8, count // 4), "snps3_ds.perf.gpu_check.corpus"))
    return prefix


def build_images(out: Path, count: int) -> Path:
    """`count` JPEG images of the demo scenes at 384-512 px (one-frame samples); returns the shard prefix."""
    from PIL import Image

    prefix = out / "jpg" / "train"
    if Path(f"{prefix}.shards.json").is_file():
        return prefix
    with ShardWriter(prefix, max_samples=max(8, count // 4), command="snps3_ds.perf.gpu_check.corpus") as writer:
        for index in range(count):
            rng = clip_rng(11, "train", index)
            background, shapes, width, height = sample_scene(rng, IMAGE_SIDES)
            frame = render_clip(rng, background, shapes, width, height, 1)[0]
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, "JPEG", quality=90)
            meta = {"captions": make_captions(rng, background, shapes, 2), "kind": "image", "width": width,
                    "height": height, "source": "demo"}
            writer.write(f"img_{index:06d}", {"jpg": buffer.getvalue(), "json": json.dumps(meta).encode()})
    return prefix


def frequency_table(prefixes: list[Path], tokenizer, out: Path) -> Path:
    """significance.json + lemmas.json ranking the tokenizer's words by how often the captions use them."""
    from snps3_ds.data.samples import sample_meta
    from snps3_ds.data.stream.shards import resolve_shards
    import webdataset as wds

    counts: collections.Counter[int] = collections.Counter()
    for sample in wds.WebDataset(resolve_shards([str(p) for p in prefixes]), shardshuffle=False, empty_check=False):
        for caption in sample_meta(sample)["captions"]:
            counts.update(i for i in tokenizer(caption, add_special_tokens=False)["input_ids"])
    names = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    order = sorted(counts, key=lambda i: (-counts[i], i))
    rank = np.full(len(names), len(names), dtype=np.int64)
    rank[order] = np.arange(len(order))
    total = np.zeros(len(names), dtype=np.int64)
    total[list(counts)] = list(counts.values())
    out.mkdir(parents=True, exist_ok=True)
    (out / "significance.json").write_text(json.dumps({"tokens": {"name": names, "rank": rank.tolist(),
                                                                  "total_count": total.tolist()}}))
    (out / "lemmas.json").write_text(json.dumps({"variants": {}}))
    return out
