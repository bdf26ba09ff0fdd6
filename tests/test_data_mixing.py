"""Mixing several datasets by weight (images and videos in one global stream, split across ranks), and
evaluation streams that yield every sample exactly once across ranks and DataLoader workers. Select with
`pytest -k mixing`."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from shard_factory import data_config, jpeg_bytes, meta_bytes, raw_samples, write_set
from snps3_ds.config import MaskingConfig, TrainSetConfig
from snps3_ds.data.loader import build_eval_loader, StreamPlacement, build_train_loader
from snps3_ds.data.stream.shards import ShardSet, eval_stream, resolve_shards
from snps3_ds.data.stream.order import GlobalOrder, IndexedSet


def _text_only_set(prefix: Path, name: str, count: int, shard_size: int) -> list[str]:
    """Shards of json-only samples: enough to test stream order and mixing without decoding."""
    write_set(prefix, [(f"{name}_{i:04d}", {"json": meta_bytes([f"{name} {i}"])}) for i in range(count)], shard_size)
    return resolve_shards([str(prefix)])


def _order(sets: list[ShardSet], seed: int = 3) -> GlobalOrder:
    return GlobalOrder([IndexedSet(s.name, s.urls, s.weight, lambda url, n: None) for s in sets], seed, shuffle_window=4)


def test_mixing_proportions_within_three_percent(tmp_path: Path) -> None:
    weights = {"webvid": 0.6, "cc3m": 0.3, "coco": 0.1}
    sets = [ShardSet(_text_only_set(tmp_path / name, name, 40, 10), weight, name) for name, weight in weights.items()]
    order = _order(sets)
    drawn = Counter(order.sets[place.set_index].name for place in order.cursor().take(5000))
    for name, weight in weights.items():
        assert abs(drawn[name] / 5000 - weight) <= 0.03, (name, drawn)


def test_mixing_skipping_ahead_equals_reading_through(tmp_path: Path) -> None:
    sets = [ShardSet(_text_only_set(tmp_path / n, n, 30, 10), w, n) for n, w in (("a", 0.7), ("b", 0.3))]
    order = _order(sets)
    read = order.cursor()
    read.take(2500)  # across blocks of set picks
    skipped = order.cursor()
    skipped.skip_to(2500)
    assert skipped.state() == read.state() and sum(read.state()["drawn"]) == 2500
    assert [p.seed for p in skipped.take(10)] == [p.seed for p in read.take(10)]


def test_mixing_ranks_read_disjoint_micro_batches_of_one_order(vp9: Path, tokenizer) -> None:
    data = data_config(train_shards=[str(vp9 / "train")])
    ranks = [[k for b in itertools.islice(build_train_loader(data, MaskingConfig(), tokenizer, 2,
                                                             StreamPlacement(rank, 2, 0)), 3) for k in b.keys]
             for rank in (0, 1)]
    alone = [k for b in itertools.islice(build_train_loader(data, MaskingConfig(), tokenizer, 2,
                                                            StreamPlacement(0, 1, 0)), 6) for k in b.keys]
    assert not set(ranks[0]) & set(ranks[1]), "within an epoch the ranks read disjoint samples"
    interleaved = [k for n in range(3) for r in (0, 1) for k in ranks[r][2 * n:2 * n + 2]]
    assert interleaved == alone, "rank r's n-th micro-batch is global micro-batch 2n + r"


@pytest.mark.parametrize("shards", [5, 2], ids=["split-by-shard", "split-by-sample"])
def test_mixing_eval_exactly_once_over_2_ranks_x_2_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           shards: int) -> None:
    urls = _text_only_set(tmp_path / "ev", "ev", 23, -(-23 // shards))
    assert len(urls) == shards

    def read(rank: int) -> list[str]:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        return [s["__key__"] for s in DataLoader(eval_stream(urls), batch_size=None, num_workers=2)]

    ranks = [read(0), read(1)]
    seen = ranks[0] + ranks[1]
    assert sorted(seen) == [f"ev_{i:04d}" for i in range(23)], "every sample exactly once"
    assert ranks == [read(0), read(1)], "the same order every time"


def test_mixing_eval_loader_exactly_once_with_workers(vp9: Path, tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    everything = sorted(s["__key__"] for s in raw_samples(vp9 / "test"))
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        data = data_config(eval_shards=[str(vp9 / "test")], num_workers=2)
        seen += [k for b in build_eval_loader(data, tokenizer, 3, 2) for k in b.keys]
    assert sorted(seen) == everything and len(everything) == 8


def test_mixing_dali_eval_exactly_once_over_2_ranks(vp9: Path, tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    everything = [s["__key__"] for s in raw_samples(vp9 / "test")]
    per_rank = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        data = data_config(eval_shards=[str(vp9 / "test")], decoder="dali")
        per_rank.append([k for b in build_eval_loader(data, tokenizer, 3, 2) for k in b.keys])
    assert per_rank[0] + per_rank[1] == everything, "shard order, each sample once"


@pytest.mark.parametrize("decoder", ["auto", "dali"])
def test_mixing_images_and_videos_in_one_stream(vp9: Path, tmp_path: Path, tokenizer, decoder: str) -> None:
    photos = write_set(tmp_path / "photos", [(f"img_{i}", {"jpg": jpeg_bytes(seed=i), "json": meta_bytes([f"photo {i}"])})
                                             for i in range(6)])
    data = data_config(decoder=decoder, num_clips=3, train_sets=[TrainSetConfig([str(vp9 / "train")], 0.5, "video"),
                                                                 TrainSetConfig([str(photos)], 0.5, "image")])
    batches = build_train_loader(data, MaskingConfig(), tokenizer, 8, StreamPlacement(0, 1, 0))
    kinds = Counter()
    for batch in itertools.islice(batches, 3):
        assert batch.frames.shape == (8, 3, 3, 32, 32)
        assert batch.clip_mask.all(), "an image is repeated over its clips, as the reference"
        for key, clips in zip(batch.keys, batch.frames):
            if key.startswith("img_"):
                assert torch.equal(clips[0], clips[1]) and torch.equal(clips[0], clips[2]), key
            kinds["image" if key.startswith("img_") else "video"] += 1
    assert kinds["image"] >= 4 and kinds["video"] >= 4, kinds


def test_mixing_config_rejects_both_shard_keys(vp9: Path, tokenizer) -> None:
    data = data_config(train_shards=[str(vp9 / "train")], train_sets=[TrainSetConfig([str(vp9 / "train")])])
    with pytest.raises(ValueError, match="train_shards and data.train_sets"):
        build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 0))
