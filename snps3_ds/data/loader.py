"""From raw shard samples to VideoTextBatch: decode + sample frames + transform, then tokenise + mask.

Stages are small picklable callables run inside DataLoader workers. Each worker owns its random
generators, seeded from (run seed, rank, worker), so masks and crops differ across ranks and workers
and are reproducible.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from snps3_ds.config import DataConfig, MaskingConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, DecodeError, FrameDecoder, make_decoder
from snps3_ds.data.shards import eval_stream, resolve_shards, stream_seed, train_stream
from snps3_ds.data.text import SpecialIds, mlm_mask, tokenize
from snps3_ds.data.transforms import FrameTransform

log = logging.getLogger(__name__)
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS


@dataclass
class DecodedSample:
    key: str
    frames: torch.Tensor  # [t, 3, S, S], t <= num_clips
    captions: list[str]


class _WorkerRandom:
    """A random.Random created on first use inside each worker, seeded by (seed, rank, worker, salt)."""

    def __init__(self, seed: int, rank: int, salt: int) -> None:
        self.seed, self.rank, self.salt = seed, rank, salt
        self._rng: random.Random | None = None

    def get(self) -> random.Random:
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            self._rng = random.Random(stream_seed(self.seed, self.rank, info.id if info else 0, self.salt))
        return self._rng


class SampleDecoder:
    """Raw webdataset sample -> DecodedSample, or None (skipped, counted by reason) when it is bad."""

    def __init__(self, decoder: FrameDecoder, transform: FrameTransform, num_clips: int, train: bool,
                 rng: _WorkerRandom) -> None:
        self.decoder, self.transform, self.num_clips, self.train, self.rng = decoder, transform, num_clips, train, rng
        self.skipped: Counter[str] = Counter()

    def __call__(self, raw: dict[str, Any]) -> DecodedSample | None:
        key = raw.get("__key__", "?")
        try:
            meta = self._meta(raw)
            ext = next((e for e in MEDIA_EXTENSIONS if e in raw), None)
            if ext is None:
                raise DecodeError("missing_media", f"members: {sorted(k for k in raw if not k.startswith('__'))}")
            frames = self.decoder.decode(raw[ext], ext, self.num_clips, self.train, self.rng.get(),
                                         meta.get("start"), meta.get("end"))
            return DecodedSample(key, self.transform(frames, self.rng.get()), meta["captions"])
        except DecodeError as err:
            self.skipped[err.reason] += 1
            log.warning("skipping sample %s (%s); skipped so far: %s", key, err, dict(self.skipped))
            return None

    @staticmethod
    def _meta(raw: dict[str, Any]) -> dict[str, Any]:
        if "json" not in raw:
            raise DecodeError("missing_json")
        try:
            meta = json.loads(raw["json"])
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DecodeError("bad_json", str(err)[:100]) from err
        captions = meta.get("captions") if isinstance(meta, dict) else None
        if not isinstance(captions, list) or not any(isinstance(c, str) and c.strip() for c in captions):
            raise DecodeError("no_caption")
        meta["captions"] = [c for c in captions if isinstance(c, str) and c.strip()]
        return meta


class Collator:
    """DecodedSamples -> VideoTextBatch: pad clips, tokenise captions, apply MLM masking.

    Training draws one caption per video; evaluation keeps them all (text_video_index maps them back).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_len: int, num_clips: int,
                 masking: MaskingConfig | None, train: bool, rng: _WorkerRandom) -> None:
        self.tokenizer, self.max_len, self.num_clips = tokenizer, max_len, num_clips
        self.masking, self.train, self.rng = masking, train, rng
        self.special = SpecialIds.from_tokenizer(tokenizer)
        self._generator: torch.Generator | None = None

    def __call__(self, samples: list[DecodedSample]) -> VideoTextBatch:
        frames, clip_mask = self._stack_frames(samples)
        captions, owners = [], []
        for index, sample in enumerate(samples):
            chosen = [self.rng.get().choice(sample.captions)] if self.train else sample.captions
            captions += chosen
            owners += [index] * len(chosen)
        ids, mask = tokenize(self.tokenizer, captions, self.max_len)
        if self.masking is not None:
            mlm_ids, labels = mlm_mask(ids, mask, self.special, self.masking, self._torch_generator())
        else:
            mlm_ids, labels = ids.clone(), torch.full_like(ids, -100)
        return VideoTextBatch(keys=[s.key for s in samples], frames=frames, clip_mask=clip_mask, text_ids=ids,
                              text_mask=mask, text_video_index=torch.tensor(owners), mlm_ids=mlm_ids, mlm_labels=labels)

    def _stack_frames(self, samples: list[DecodedSample]) -> tuple[torch.Tensor, torch.Tensor]:
        size = samples[0].frames.shape[-3:]
        frames = torch.zeros(len(samples), self.num_clips, *size)
        clip_mask = torch.zeros(len(samples), self.num_clips, dtype=torch.bool)
        for i, sample in enumerate(samples):
            t = min(sample.frames.shape[0], self.num_clips)
            frames[i, :t], clip_mask[i, :t] = sample.frames[:t], True
        return frames, clip_mask

    def _torch_generator(self) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.rng.get().getrandbits(63))
        return self._generator


def build_train_loader(data: DataConfig, masking: MaskingConfig, tokenizer: PreTrainedTokenizerBase,
                       micro_batch_size: int, rank: int, seed: int) -> Iterator[VideoTextBatch]:
    """Infinite training batches of micro_batch_size samples for this rank."""
    urls = resolve_shards(data.train_shards)
    decoder = SampleDecoder(make_decoder(data.decoder), FrameTransform(data.image_size, True, data.train_scale, data.hflip),
                            data.num_clips, True, _WorkerRandom(seed, rank, 1))
    collate = Collator(tokenizer, data.max_text_len, data.num_clips, masking, True, _WorkerRandom(seed, rank, 2))
    pipeline = train_stream(urls, seed, data.shuffle_buffer).compose(
        wds.map(decoder), wds.select(_is_sample), wds.batched(micro_batch_size, collation_fn=collate, partial=False))
    loader = DataLoader(pipeline, batch_size=None, num_workers=data.num_workers,
                        persistent_workers=data.num_workers > 0, prefetch_factor=4 if data.num_workers else None)
    return iter(loader)


def build_eval_loader(data: DataConfig, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                      num_clips: int) -> DataLoader:
    """Held-out batches with every caption, centre crops and centre frames; each sample once per rank set."""
    urls = resolve_shards(data.eval_shards)
    decoder = SampleDecoder(make_decoder(data.decoder), FrameTransform(data.image_size, False), num_clips, False,
                            _WorkerRandom(0, 0, 1))
    collate = Collator(tokenizer, data.max_text_len, num_clips, None, False, _WorkerRandom(0, 0, 2))
    pipeline = eval_stream(urls).compose(
        wds.map(decoder), wds.select(_is_sample), wds.batched(batch_size, collation_fn=collate, partial=True))
    return DataLoader(pipeline, batch_size=None, num_workers=min(data.num_workers, 1))


def _is_sample(sample: DecodedSample | None) -> bool:
    return sample is not None
