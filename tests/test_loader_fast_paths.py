"""The CPU loader's fast paths give exactly what the plain paths give: PyAV first in `auto` (same frames as decord
on H.264), MP4 frame counts from the sample table, uint8 frames normalised inside the Collator, the tokenizer's
Rust backend called directly, and small batch tensors pickled by value between processes."""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path

import av
import pytest
import torch

from shard_factory import raw_samples
from snps3_ds.config import MaskingConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.collate import Collator
from snps3_ds.data.decode.backends import DecordDecoder, FallbackDecoder, PyAVDecoder, make_decoder
from snps3_ds.data.decode.pyav import _frame_count, probe_video
from snps3_ds.data.decode.sample import DecodedSample
from snps3_ds.data.decode.transforms import FrameTransform
from snps3_ds.data.seeds import WorkerRandom
from snps3_ds.data.text.tokens import tokenize


def test_auto_decodes_with_pyav_first_and_decord_as_fallback() -> None:
    auto = make_decoder("auto")
    assert isinstance(auto, FallbackDecoder) and [b.name for b in auto.backends] == ["pyav", "decord"]


def test_pyav_and_decord_give_the_same_h264_frames(tiny_corpus: Path) -> None:
    for sample in raw_samples(tiny_corpus / "test")[:4]:
        pyav = PyAVDecoder().decode(sample["mp4"], "mp4", 4, True, random.Random(3))
        decord = DecordDecoder().decode(sample["mp4"], "mp4", 4, True, random.Random(3))
        assert pyav.shape == decord.shape and (pyav == decord).all()


def test_mp4_frame_count_comes_from_the_sample_table_and_equals_the_packets(tiny_corpus: Path, vp9: Path) -> None:
    for data in [s["mp4"] for s in raw_samples(tiny_corpus / "test")[:3]] + [s["webm"] for s in raw_samples(vp9 / "test")[:2]]:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            packets = sum(1 for packet in container.demux(stream) if packet.size)
        with av.open(io.BytesIO(data)) as container:
            assert _frame_count(container, container.streams.video[0]) == packets == probe_video(data).num_frames


def _samples(dtype: str) -> list[DecodedSample]:
    """Three clips (one short: its frames repeated over the clips), as uint8 geometry output or as normalised float."""
    transform, generator = FrameTransform(16, True), torch.Generator().manual_seed(0)
    samples = []
    for i, clips in enumerate((3, 3, 2)):
        frames = torch.randint(0, 256, (clips, 24, 30, 3), dtype=torch.uint8, generator=generator).numpy()
        out = transform.geometry(frames, random.Random(i)) if dtype == "uint8" else transform(frames, random.Random(i))
        samples.append(DecodedSample(f"k{i}", out, [f"caption {i}"], seed=i))
    return samples


@pytest.mark.parametrize("mix", ["uint8", "mixed"])
def test_collator_normalises_uint8_frames_exactly_as_the_transform(tokenizer, mix: str) -> None:
    collate = Collator(tokenizer, 12, 3, MaskingConfig(), True, WorkerRandom(0, 0, 2))
    want = collate(_samples("float"))
    raw = _samples("uint8")
    if mix == "mixed":
        raw[1] = _samples("float")[1]
    got = collate(raw)
    assert got.frames.dtype == torch.float32 and torch.equal(got.clip_mask, want.clip_mask)
    torch.testing.assert_close(got.frames, want.frames, atol=1e-6, rtol=0)
    # sample 2 has fewer frames than clips: its frames are repeated over the clips (as the reference), never zeros
    assert torch.equal(got.frames[2, 0], got.frames[2, 1]) and not torch.equal(got.frames[2, 1], got.frames[2, 2])
    assert bool(got.clip_mask[2].all())


def test_tokenize_backend_path_equals_the_tokenizer_call(tokenizer) -> None:
    captions = ["a small red circle moves to the left", "Ünïcödé façade, naïve café " * 6, "x",
                "two shapes: a large blue square rises while a small yellow diamond stays still"]
    for max_len in (6, 16, 30):
        ids, mask = tokenize(tokenizer, captions, max_len)
        plain = tokenizer(captions, max_length=max_len, truncation=True, padding="max_length", return_tensors="pt")
        assert torch.equal(ids, plain["input_ids"]) and torch.equal(mask, plain["attention_mask"])
        assert ids.dtype == plain["input_ids"].dtype and mask.dtype == plain["attention_mask"].dtype


def test_batch_pickles_small_tensors_by_value_and_round_trips() -> None:
    frames = torch.randn(2, 3, 3, 64, 64)  # 288 KB: over the by-value limit
    batch = VideoTextBatch(["a", "b"], frames, torch.ones(2, 3, dtype=torch.bool), torch.arange(8).view(2, 4),
                           torch.ones(2, 4, dtype=torch.long), torch.arange(2), torch.arange(8).view(2, 4),
                           torch.full((2, 4), -100), stream_position={"worker": 1}, skipped={"undecodable": 1})
    state = batch.__getstate__()
    assert type(state["text_ids"]).__name__ == "_ByValue" and isinstance(state["frames"], torch.Tensor)
    back = pickle.loads(pickle.dumps(batch))
    for name in ("frames", "clip_mask", "text_ids", "text_mask", "text_video_index", "mlm_ids", "mlm_labels"):
        assert isinstance(getattr(back, name), torch.Tensor) and getattr(back, name).dtype == getattr(batch, name).dtype
        assert torch.equal(getattr(back, name), getattr(batch, name))
    assert back.keys == ["a", "b"] and back.stream_position == {"worker": 1} and back.skipped == {"undecodable": 1}
