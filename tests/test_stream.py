"""The indexed training stream: epochs split across readers, positions that continue exactly, tar indexing."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import torch

from shard_factory import data_config, meta_bytes, truncate, write_set
from snps3_ds.config import MaskingConfig
from snps3_ds.data.loader import StreamPlacement, build_train_loader
from snps3_ds.data.stream.shards import resolve_shards
from snps3_ds.data.stream.reader import ResumableSamples
from snps3_ds.data.stream.index import index_shard


def _text_set(prefix: Path, count: int, shard_size: int) -> list[str]:
    write_set(prefix, [(f"s_{i:04d}", {"json": meta_bytes([f"caption {i}"])}) for i in range(count)], shard_size)
    return resolve_shards([str(prefix)])


def _stream(urls: list[str], rank: int = 0, world: int = 1, workers: int = 1, positions=None) -> ResumableSamples:
    stream = ResumableSamples([("a", urls, 1.0)], seed=5, rank=rank, world_size=world, workers=workers,
                              shuffle_window=2)
    stream.positions = positions or {}
    return stream


def test_stream_epoch_is_split_disjointly_across_readers(tmp_path: Path) -> None:
    urls = _text_set(tmp_path / "a", 41, 7)
    readers = []
    for rank in range(2):
        stream = _stream(urls, rank, world=2, workers=2)
        for worker in range(2):
            reader = rank * 2 + worker
            readers.append([s["__key__"] for s in itertools.islice(stream.read(reader, worker, stream.start_position()), 10)])
    seen = [k for r in readers for k in r]
    assert len(set(seen)) == 40, "one epoch: 4 readers x 10 samples, none twice (one left over)"
    again = _stream(urls, 1, world=2, workers=2)
    assert [s["__key__"] for s in itertools.islice(again.read(2, 0, again.start_position()), 10)] == readers[2]


def test_stream_continues_from_a_saved_position(tmp_path: Path) -> None:
    urls = _text_set(tmp_path / "a", 30, 8)
    whole = list(itertools.islice(iter(_stream(urls)), 70))  # more than two epochs
    position = {k: v for k, v in whole[44]["__pos__"].items() if k != "worker"}
    resumed = list(itertools.islice(iter(_stream(urls, positions={0: position})), 25))
    assert [(s["__key__"], s["__seed__"]) for s in resumed] == [(s["__key__"], s["__seed__"]) for s in whole[45:]]
    assert [s["__key__"] for s in whole[:30]] != [s["__key__"] for s in whole[30:60]], "each epoch reshuffled"
    assert sorted(s["__key__"] for s in whole[:30]) == sorted(s["__key__"] for s in whole[30:60])


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
    assert resumed.state_dict()["batches"] == 7


def test_stream_changed_layout_starts_a_new_epoch(tmp_path: Path, tokenizer, vp9: Path, caplog) -> None:
    data = data_config(train_shards=[str(vp9 / "train")], num_workers=0)
    first = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 3))
    next(first)
    state = first.state_dict()
    other = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 2, 3), resume=state)
    next(other)
    assert "layout changed" in caplog.text


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
