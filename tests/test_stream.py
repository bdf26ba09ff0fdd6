"""The indexed training stream: one global order per run, read by any number of ranks and workers, positions
that continue exactly (on another world size too), tar indexing."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from shard_factory import data_config, meta_bytes, truncate, write_set
from snps3_ds.config import MaskingConfig
from snps3_ds.data.loader import StreamPlacement, build_train_loader
from snps3_ds.data.stream.index import index_shard
from snps3_ds.data.stream.order import GlobalOrder, IndexedSet
from snps3_ds.data.stream.position import fresh_start
from snps3_ds.data.stream.reader import BatchPlan, BatchStages, GlobalBatches
from snps3_ds.data.stream.shards import resolve_shards


def _text_set(prefix: Path, count: int, shard_size: int) -> list[str]:
    write_set(prefix, [(f"s_{i:04d}", {"json": meta_bytes([f"caption {i}"])}) for i in range(count)], shard_size)
    return resolve_shards([str(prefix)])


def _order(urls: list[str], window: int = 2) -> GlobalOrder:
    return GlobalOrder([IndexedSet("a", urls, 1.0, lambda url, n: None)], seed=5, shuffle_window=window)


@dataclass
class _Keys:
    """A stand-in batch: the sample keys only (these tests need no decoding)."""

    keys: list[str]
    stream_position: dict | None = field(default=None)


_STAGES = BatchStages(decode=lambda raw: raw["__key__"], collate=_Keys, attach_skips=lambda b: b,
                      on_error=lambda reason, err: None)


def _rank_batches(order: GlobalOrder, rank: int, world: int, workers: int, count: int, start=None) -> list[_Keys]:
    dataset = GlobalBatches(order, BatchPlan(rank, world, 2, max(1, workers)), _STAGES, start or fresh_start(order.layout))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    batches, stream = [], iter(loader)
    for _ in range(count):
        batches.append(next(stream))
    return batches


def _global_micro_batches(order: GlobalOrder, world: int, workers: int, rounds: int, start=None) -> list[list[str]]:
    """Micro-batch n of rank r is global micro-batch n x world + r: put the ranks' batches back in that order."""
    per_rank = [_rank_batches(order, r, world, workers, rounds, start) for r in range(world)]
    return [per_rank[r][n].keys for n in range(rounds) for r in range(world)]


def test_stream_epoch_is_a_permutation_and_each_epoch_reshuffled(tmp_path: Path) -> None:
    order = _order(_text_set(tmp_path / "a", 41, 7))
    cursor = order.cursor()
    keys = []
    for place in cursor.take(82):
        chosen, shard, sample = order.locate(place)
        keys.append(chosen.shards[shard].samples[sample].key)
    assert sorted(keys[:41]) == sorted(keys[41:]) == [f"s_{i:04d}" for i in range(41)]
    assert keys[:41] != keys[41:], "each epoch reshuffled"
    assert cursor.state() == {"position": 82, "drawn": [82]}


@pytest.mark.parametrize("world, workers", [(2, 0), (3, 2), (1, 2)])
def test_stream_global_batches_do_not_depend_on_world_or_workers(tmp_path: Path, world: int, workers: int) -> None:
    order = _order(_text_set(tmp_path / "a", 30, 8))
    alone = _global_micro_batches(order, 1, 0, 15)
    assert _global_micro_batches(order, world, workers, 12 // world) == alone[:12 // world * world]
    seen = [k for batch in alone for k in batch]
    assert sorted(seen[:30]) == sorted(f"s_{i:04d}" for i in range(30)), "one epoch: every sample once"


def test_stream_resume_on_another_world_size_continues_the_order(tmp_path: Path) -> None:
    order = _order(_text_set(tmp_path / "a", 30, 8))
    whole = _global_micro_batches(order, 1, 0, 14)
    two = [_rank_batches(order, r, 2, 1, 3) for r in range(2)]
    saved = two[0][-1].stream_position
    assert saved == two[1][-1].stream_position == {"position": 12, "drawn": [12]}, "all ranks agree on the position"
    assert [two[r][n].keys for n in range(3) for r in range(2)] == whole[:6]
    assert _global_micro_batches(order, 1, 2, 4, saved) == whole[6:10], "resumed on one rank"
    assert _global_micro_batches(order, 4, 0, 2, saved) == whole[6:14], "resumed on four ranks"


def test_stream_loader_state_resumes_batches_exactly(tmp_path: Path, tokenizer, vp9: Path) -> None:
    data = data_config(train_shards=[str(vp9 / "train")], num_workers=2)
    masking = MaskingConfig()
    first = build_train_loader(data, masking, tokenizer, 2, StreamPlacement(0, 1, 3))
    for _ in range(3):
        next(first)
    state = first.state_dict()
    expected = [next(first) for _ in range(4)]
    resumed = build_train_loader(data, masking, tokenizer, 2, StreamPlacement(0, 1, 3), resume=state)
    for want in expected:
        got = next(resumed)
        assert got.keys == want.keys
        assert torch.equal(got.frames, want.frames) and torch.equal(got.mlm_ids, want.mlm_ids)
    assert resumed.state_dict()["position"] == {"position": 14, "drawn": [14]}


def test_stream_changed_layout_starts_a_new_epoch(tmp_path: Path, tokenizer, vp9: Path, caplog) -> None:
    data = data_config(train_shards=[str(vp9 / "train")], num_workers=0)
    first = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 3))
    next(first)
    state = first.state_dict()
    other = build_train_loader(data_config(train_shards=[str(vp9 / "train")], shuffle_window=1), MaskingConfig(),
                               tokenizer, 2, StreamPlacement(0, 2, 3), resume=state)
    next(other)
    assert "layout changed" in caplog.text and other.state_dict()["position"]["drawn"] == [12 + 2 * 2]
    legacy = {"layout": {"world_size": 1}, "batches": 3, "positions": {"0": {"draws": 6, "cursors": [[2, 3]]}}}
    old = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 3), resume=legacy)
    next(old)
    assert old.state_dict()["position"]["drawn"] == [3 * 12 + 2], "a pre-global-order state starts a new epoch"


def test_stream_index_without_idx_and_with_truncation(tmp_path: Path) -> None:
    urls = _text_set(tmp_path / "a", 12, 12)
    with_idx = index_shard(urls[0])
    Path(urls[0]).with_suffix(".idx").unlink()
    scanned = index_shard(urls[0])
    assert scanned.source == "scan" and [s.key for s in scanned.samples] == [s.key for s in with_idx.samples]
    cut = Path(shutil.copy(urls[0], tmp_path / "cut-000000.tar"))
    truncate(cut, cut.stat().st_size // 2)
    partial = index_shard(str(cut))
    assert 0 < len(partial.samples) < 12 and partial.dropped >= 1


def test_stream_dali_reader_resumes_by_count_with_a_fresh_order(tokenizer, vp9: Path, caplog) -> None:
    data = data_config(train_shards=[str(vp9 / "train")], decoder="dali")
    first = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 3))
    next(first), next(first)
    assert first.state_dict() == {"dali_batches": 2}
    resumed = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 3), resume=first.state_dict())
    next(resumed)
    assert resumed.state_dict() == {"dali_batches": 3} and "new shuffle seed" in caplog.text
