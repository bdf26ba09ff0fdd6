"""Helpers for the data tests: small shard sets with chosen good and bad samples, built in seconds."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds

from snps3_ds.demo.corpus import ClipConfig, ShardLayout, make_demo_corpus
from snps3_ds.config import DataConfig
from snps3_ds.sharding.writer import ShardWriter
from snps3_ds.data.stream.shards import resolve_shards

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def raw_samples(spec: str | Path) -> list[dict]:
    return list(wds.WebDataset(resolve_shards([str(spec)]), shardshuffle=False, empty_check=False))


def write_set(prefix: Path, samples: list[tuple[str, dict[str, bytes]]], shard_size: int = 1000) -> Path:
    """A shard set at `prefix` holding exactly `samples` (key, members), in order."""
    with ShardWriter(prefix, max_samples=shard_size) as writer:
        for key, members in samples:
            writer.write(key, members)
    return prefix


def meta_bytes(captions: list[str], **fields) -> bytes:
    return json.dumps({"captions": captions, **fields}).encode()


def jpeg_bytes(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def vp9_corpus(out: Path) -> Path:
    """12 training and 8 held-out VP9/WebM clips of moving shapes (4 per shard)."""
    make_demo_corpus(out, train=12, test=8, seed=1, clips=ClipConfig(codec="vp9"), workers=1, shards=ShardLayout(4))
    return out


def data_config(**fields) -> DataConfig:
    """A small DataConfig for loader tests: 2 clips at 32 px, no workers, a quick skip-rate check."""
    base = dict(num_clips=2, image_size=32, max_text_len=16, shuffle_buffer=8, num_workers=0, skip_rate_warmup=1)
    base.update(fields)
    return DataConfig(**base)


def truncate(path: Path, keep: int) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path
