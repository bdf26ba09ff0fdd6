"""The data path on real media and annotations from ../shared/realdata (never committed; skipped when absent):
codecs decord refuses, a video2dataset shard, the MSR-VTT 1k-A csv, and DALI-CPU against decord on the same
clips. Select with `pytest -k realdata`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shard_factory import REALDATA, data_config, raw_samples
from snps3_ds.config import ModelConfig
from snps3_ds.data.loader import build_eval_loader
from snps3_ds.datasets.registry import read_manifest
from snps3_ds.data.decode.transforms import IMAGENET_STD
from snps3_ds.models.factory import build_tokenizer

from conftest import REPO, TINY_RECIPE

pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real test material not found at {REALDATA}")
from snps3_ds.sharding import build as build_shards
from snps3_ds.sharding import verify as verify_shards

V2D_SHARD = REALDATA / "shards" / "video2dataset-000000.tar"
DALI_READY = [("dali_cpu_ready/pool_cleaning_vp9.webm", "a person cleans a swimming pool"),
              ("dali_cpu_ready/arm_wrestling_mjpeg.avi", "two men arm wrestling"),
              ("moviepy/transparent.webm", "a transparent vp9 clip"),
              ("moviepy/big_buck_bunny_432_433.webm", "a cartoon rabbit in vp8"),
              ("moviepy/no_duration.webm", "vp9 without a duration header")]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(ModelConfig())


@pytest.fixture(scope="module")
def realdata_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """realdata/manifest.jsonl built as is (bytes copied): 15 captioned clips in 5 codecs/containers."""
    out = tmp_path_factory.mktemp("real") / "real"
    summary = build_shards.main(["--manifest", str(REALDATA / "manifest.jsonl"), "--format", "jsonl",
                                 "--out", str(out), "--workers", "1", "--shard-size", "6"])
    assert summary["samples"] == 15 and summary["failures"] == {"empty_caption": 6}
    return out


@pytest.fixture(scope="module")
def dali_ready_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The VP8/VP9/MJPEG clips DALI's CPU decoder reads, with captions, bytes copied."""
    folder = tmp_path_factory.mktemp("dali_ready")
    manifest = folder / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": p, "caption": c}) + "\n" for p, c in DALI_READY))
    build_shards.main(["--manifest", str(manifest), "--format", "jsonl", "--media-root", str(REALDATA / "videos"),
                       "--out", str(folder / "dc"), "--workers", "1"])
    return folder / "dc"


def _keys_and_skips(data, tokenizer) -> tuple[list[str], dict[str, float]]:
    loader = build_eval_loader(data, tokenizer, 4, 4)
    keys = [k for batch in loader for k in batch.keys]
    return keys, loader.stats()


def test_realdata_video2dataset_shard_decodes_with_fallback(tokenizer) -> None:
    keys, stats = _keys_and_skips(data_config(eval_shards=[str(V2D_SHARD)]), tokenizer)
    assert sorted(keys) == sorted(s["__key__"] for s in raw_samples(V2D_SHARD)) and stats["data/skipped"] == 0
    strict = data_config(eval_shards=[str(V2D_SHARD)], decoder="decord", max_skip_rate=1.0)
    keys, stats = _keys_and_skips(strict, tokenizer)
    assert keys == ["0000008_00001", "0000038_00003"], "decord reads the H.264 clips only"
    assert stats["data/skipped_undecodable"] == 3, "the single-frame MJPEG samples are skipped with a reason"


def test_realdata_video2dataset_caption_comes_from_txt(tokenizer) -> None:
    batch = next(iter(build_eval_loader(data_config(eval_shards=[str(V2D_SHARD)]), tokenizer, 5, 2)))
    texts = tokenizer.batch_decode(batch.text_ids, skip_special_tokens=True)
    assert "a man in a suit and orange tie standing at a podium." in texts


def test_realdata_manifest_builds_verifies_and_trains(realdata_shards: Path, tmp_path: Path) -> None:
    report = verify_shards.main([str(realdata_shards), "--workers", "1"])
    assert report["ok"] == 15 and {"h264", "mjpeg", "vp9"} <= set(report["codecs"])
    from snps3_ds.run import pretrain

    run_dir = tmp_path / "run"
    pretrain.main(["--engine", "torch", "--config", str(TINY_RECIPE), "--ds_config",
                   str(REPO / "ds_configs" / "tiny_fp32.json"), f"data.train_shards=[{realdata_shards},{V2D_SHARD}]",
                   f"data.eval_shards=[{realdata_shards}]", f"train.run_dir={run_dir}", "train.max_steps=2"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["train/loss"] > 0 for r in rows)


def test_realdata_dali_cpu_loader_takes_every_codec(realdata_shards: Path, tokenizer) -> None:
    keys, stats = _keys_and_skips(data_config(eval_shards=[str(realdata_shards)], decoder="dali"), tokenizer)
    assert len(keys) == 15 and stats["data/skipped"] == 0, "H.264 and MPEG-4 fall back to decord per sample"


def test_realdata_dali_cpu_and_decord_give_the_same_frames(dali_ready_shards: Path, tokenizer) -> None:
    frames = {}
    for decoder in ("dali", "decord"):
        data = data_config(eval_shards=[str(dali_ready_shards)], decoder=decoder, num_clips=4, image_size=224,
                           max_skip_rate=1.0)
        frames[decoder] = {k: b.frames[i] for b in build_eval_loader(data, tokenizer, 8, 4) for i, k in enumerate(b.keys)}
    assert set(frames["decord"]) == set(frames["dali"]) - {"no_duration"}, "decord cannot read no_duration.webm"
    to_pixels = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    for key, reference in frames["decord"].items():
        mad = ((frames["dali"][key] - reference).abs() * to_pixels).mean().item()
        assert mad < 2.0, f"{key}: mean absolute difference {mad:.2f} of 255"  # measured 0.04-1.27


def test_realdata_msrvtt_jsfusion_csv(tmp_path: Path) -> None:
    items = list(read_manifest("msrvtt_jsfusion", REALDATA / "captions" / "MSRVTT_JSFUSION_test.csv", tmp_path))
    assert len(items) == 1000 and len({i.key for i in items}) == 1000
    assert items[0].key == "video9770" and items[0].path == tmp_path / "video9770.mp4"
    assert items[0].captions == ["a person is connecting something to system"]
    assert all(not i.error and i.captions and "\r" not in i.captions[0] for i in items)


def test_realdata_pyav_seeking_gives_the_frames_of_a_full_decode() -> None:
    import random

    import numpy as np

    from snps3_ds.data.decode.backends import PyAVDecoder, segment_indices
    from snps3_ds.data.decode.pyav import decode_indices_pyav, probe_video

    small = ["dali_cpu_ready/pool_cleaning_vp9.webm", "dali_cpu_ready/arm_wrestling_mjpeg.avi", "moviepy/bitmap.mp4",
             "mmaction2/tests_data_test.avi", "mmaction2/demo_demo.mp4", "moviepy/example.mp4", "moviepy/transparent.webm"]
    for path in (REALDATA / "videos" / name for name in small):  # every container and codec, small frames
        data = path.read_bytes()
        frames = PyAVDecoder().decode(data, path.suffix[1:], 6, False, random.Random(0))
        expected = decode_indices_pyav(data, segment_indices(probe_video(data).num_frames, 6, False, random.Random(0)))
        assert np.array_equal(frames, expected), path.name
