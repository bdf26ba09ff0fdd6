"""The data path: shards -> decode -> frames -> tokens -> VideoTextBatch, and its failure handling."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import webdataset as wds

from snps3_ds.config import RunConfig
from snps3_ds.data.decode.backends import DecordDecoder, segment_indices
from snps3_ds.data.loader import build_eval_loader, StreamPlacement, build_train_loader
from snps3_ds.sharding.writer import ShardWriter
from snps3_ds.data.stream.shards import ShardSpecError, resolve_shards
from snps3_ds.models.factory import build_tokenizer


def _raw_samples(prefix: Path) -> list[dict]:
    return list(wds.WebDataset(resolve_shards([str(prefix)]), shardshuffle=False, empty_check=False))


def test_shard_round_trip_gives_the_batch_contract(tiny_config: RunConfig) -> None:
    tokenizer = build_tokenizer(tiny_config.model)
    batches = build_train_loader(tiny_config.data, tiny_config.masking, tokenizer, 4, StreamPlacement(0, 1, 0))
    batch = next(batches)
    data = tiny_config.data
    assert batch.frames.shape == (4, data.num_clips, 3, data.image_size, data.image_size)
    assert batch.frames.dtype == torch.float32 and torch.isfinite(batch.frames).all()
    assert batch.clip_mask.all() and len(batch.keys) == 4 and all(k.startswith("train_") for k in batch.keys)
    assert batch.text_ids.shape == (4, data.max_text_len) and (batch.text_ids[:, 0] == tokenizer.cls_token_id).all()
    assert torch.equal(batch.text_video_index, torch.arange(4))
    chosen = batch.mlm_labels != -100
    assert torch.equal(batch.mlm_labels[chosen], batch.text_ids[chosen])
    assert torch.equal(batch.mlm_ids[~chosen], batch.text_ids[~chosen])


def test_eval_stream_reads_every_sample_once_across_ranks(tiny_config: RunConfig, tiny_corpus: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = build_tokenizer(tiny_config.model)
    everything = {s["__key__"] for s in _raw_samples(tiny_corpus / "test")}
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        keys = [k for b in build_eval_loader(tiny_config.data, tokenizer, 3, 2) for k in b.keys]
        again = [k for b in build_eval_loader(tiny_config.data, tokenizer, 3, 2) for k in b.keys]
        assert keys == again, "evaluation order must be deterministic"
        seen += keys
    assert sorted(seen) == sorted(everything) and len(seen) == len(everything) == 8


def test_eval_batches_keep_every_caption(tiny_config: RunConfig) -> None:
    tokenizer = build_tokenizer(tiny_config.model)
    batch = next(iter(build_eval_loader(tiny_config.data, tokenizer, 4, 2)))
    assert batch.num_texts == 2 * batch.num_videos  # the demo corpus has two captions per clip
    assert batch.text_video_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(batch.mlm_ids, batch.text_ids)


def test_missing_shard_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ShardSpecError, match="nowhere/train"):
        resolve_shards([str(tmp_path / "nowhere" / "train")])
    with pytest.raises(ShardSpecError, match=r"missing\.shards\.json"):
        resolve_shards([str(tmp_path / "missing.shards.json")])
    with pytest.raises(ShardSpecError, match="empty"):
        resolve_shards([])


def test_shard_specs_resolve_from_index_glob_and_braces(tiny_corpus: Path) -> None:
    from_index = resolve_shards([str(tiny_corpus / "train")])
    assert len(from_index) == 3
    assert resolve_shards([str(tiny_corpus / "train-*.tar")]) == from_index
    assert resolve_shards([str(tiny_corpus / "train-{000000..000002}.tar")]) == from_index


def test_corrupt_samples_are_skipped_and_counted(tiny_config: RunConfig, tiny_corpus: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    good = _raw_samples(tiny_corpus / "test")[:2]
    meta = json.loads(good[0]["json"])
    with ShardWriter(tmp_path / "bad") as writer:
        writer.write("good_0", {"mp4": good[0]["mp4"], "json": good[0]["json"]})
        writer.write("garbage_media", {"mp4": b"\x00not a video" * 50, "json": good[0]["json"]})
        writer.write("no_json", {"mp4": good[0]["mp4"]})
        writer.write("not_utf8", {"mp4": good[0]["mp4"], "json": b"\xff\xfe{\"captions\": [\"x\"]}"})
        writer.write("empty_caption", {"mp4": good[0]["mp4"], "json": json.dumps({**meta, "captions": [" "]}).encode()})
        writer.write("good_1", {"mp4": good[1]["mp4"], "json": good[1]["json"]})
    tiny_config.data.eval_shards = [str(tmp_path / "bad")]
    tokenizer = build_tokenizer(tiny_config.model)
    keys = [k for b in build_eval_loader(tiny_config.data, tokenizer, 8, 2) for k in b.keys]
    assert keys == ["good_0", "good_1"]
    log = caplog.text
    for reason in ("undecodable", "missing_json", "bad_json", "no_caption"):
        assert reason in log


def test_segment_indices_train_random_eval_centre() -> None:
    assert segment_indices(16, 4, train=False, rng=random.Random(0)) == [2, 6, 10, 14]
    rng = random.Random(0)
    for _ in range(50):
        picks = segment_indices(16, 4, train=True, rng=rng)
        assert all(4 * i <= p < 4 * (i + 1) for i, p in enumerate(picks))
    assert segment_indices(2, 4, train=False, rng=rng) == [0, 0, 1, 1]  # short videos repeat frames


def test_decord_decodes_sampled_frames(tiny_corpus: Path) -> None:
    sample = _raw_samples(tiny_corpus / "test")[0]
    meta = json.loads(sample["json"])
    frames = DecordDecoder().decode(sample["mp4"], "mp4", 4, False, random.Random(0))
    assert frames.shape == (4, meta["height"], meta["width"], 3) and frames.dtype.name == "uint8"
