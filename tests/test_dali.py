"""The DALI backend on the CPU (VP9 demo shards): per-sample routing, the same VideoTextBatch as decord with
the same frames, and the backend choice. The GPU (`mixed`) path runs only where CUDA is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shard_factory import data_config, jpeg_bytes, raw_samples
from snps3_ds.config import MaskingConfig
from snps3_ds.data import loader as loader_module
from snps3_ds.data.dali.pipeline import CPU_CODECS, ROUTE_FALLBACK, ROUTE_IMAGE, ROUTE_VIDEO, FramePlanner
from snps3_ds.data.loader import build_eval_loader, StreamPlacement, build_train_loader
from snps3_ds.data.decode.transforms import IMAGENET_STD


def _plan(planner: FramePlanner, media: bytes, ext: str, meta: dict | None = None) -> tuple[list[int], int]:
    def array(data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8)

    indices, route = planner(array(media), array(json.dumps(meta or {}).encode()),
                             array(f"/x/s-000000.tar:512:key.{ext}".encode()))
    return indices.tolist(), int(route)


def test_dali_planner_routes_each_sample(vp9: Path, tiny_corpus: Path) -> None:
    planner = FramePlanner(4, train=False, codecs=CPU_CODECS, seed=0)
    webm = raw_samples(vp9 / "test")[0]["webm"]
    assert _plan(planner, webm, "webm") == ([2, 6, 10, 14], ROUTE_VIDEO)  # 16 frames, centre of 4 segments
    assert _plan(planner, webm, "webm", {"start": 1.0, "end": 1.9}) == ([9, 11, 13, 15], ROUTE_VIDEO)  # frames [8, 16)
    h264 = raw_samples(tiny_corpus / "test")[0]["mp4"]
    assert _plan(planner, h264, "mp4")[1] == ROUTE_FALLBACK, "DALI's CPU decoder has no H.264"
    assert _plan(planner, jpeg_bytes(), "jpg")[1] == ROUTE_IMAGE
    assert _plan(planner, b"\x1a\x45\xdf\xa3 garbage" * 9, "webm")[1] == ROUTE_FALLBACK


def test_dali_and_decord_give_the_same_batches_on_vp9(vp9: Path, tokenizer) -> None:
    batches = {}
    for decoder in ("dali", "decord"):
        data = data_config(eval_shards=[str(vp9 / "test")], decoder=decoder, num_clips=4, image_size=64)
        batches[decoder] = list(build_eval_loader(data, tokenizer, 3, 4))
    for dali, decord in zip(batches["dali"], batches["decord"], strict=True):
        assert dali.keys == decord.keys and dali.frames.shape == decord.frames.shape
        assert torch.equal(dali.text_ids, decord.text_ids) and torch.equal(dali.clip_mask, decord.clip_mask)
        to_pixels = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255
        mad = ((dali.frames - decord.frames).abs() * to_pixels).mean().item()
        assert mad < 2.0, f"mean absolute pixel difference {mad:.2f} of 255"  # measured about 0.7


def test_dali_training_batches_follow_the_contract(vp9: Path, tokenizer) -> None:
    data = data_config(train_shards=[str(vp9 / "train")], decoder="dali", num_clips=3)
    batches = build_train_loader(data, MaskingConfig(), tokenizer, 4, StreamPlacement(0, 1, 0))
    first, second = next(batches), next(batches)
    for batch in (first, second):
        assert batch.frames.shape == (4, 3, 3, 32, 32) and batch.frames.dtype == torch.float32
        assert batch.clip_mask.all() and torch.equal(batch.text_video_index, torch.arange(4))
        assert batch.skipped == {} and len(set(batch.keys)) == 4
    assert first.keys != second.keys


def test_dali_auto_chooses_dali_only_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not loader_module._use_dali("auto") and loader_module._use_dali("dali")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loader_module._use_dali("auto") and not loader_module._use_dali("decord")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the mixed (NVDEC) DALI path needs a GPU")
def test_dali_mixed_device_batches_stay_on_the_gpu(tiny_corpus: Path, tokenizer) -> None:
    data = data_config(eval_shards=[str(tiny_corpus / "test")], decoder="dali", num_clips=4)
    batch = next(iter(build_eval_loader(data, tokenizer, 4, 4)))
    assert batch.frames.is_cuda and batch.frames.shape == (4, 4, 3, 32, 32) and batch.skipped == {}
