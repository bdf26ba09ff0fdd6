"""DALI pipeline outputs -> DecodedSamples -> VideoTextBatches: endless mixed training batches, and
evaluation batches with every sample exactly once across ranks.

DALI runs its own threads in the training process (no DataLoader workers), so skip counts live in one
SkipCounter here and ride on each batch exactly as on the decord path.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from webdataset.utils import pytorch_worker_info

from snps3_ds.config import DataConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.dali.pipeline import ROUTE_FALLBACK, PipelineSpec, build_pipeline, split_source_info
from snps3_ds.data.dali.shards import checked_shards
from snps3_ds.data.decode.backends import make_decoder
from snps3_ds.data.errors import DataQualityError, DecodeError
from snps3_ds.data.collate import Collator, clip_sources
from snps3_ds.data.decode.sample import DecodedSample, SampleDecoder
from snps3_ds.data.seeds import WorkerRandom, stream_seed
from snps3_ds.data.samples import sample_meta
from snps3_ds.data.stream.shards import ShardSet, weighted_interleave
from snps3_ds.data.skips import SkipCounter
from snps3_ds.data.decode.transforms import FrameTransform

log = logging.getLogger(__name__)
MAX_REBUILDS = 10


def _bytes(tensor: Any) -> bytes:
    return np.asarray(tensor).tobytes()


class OutputConverter:
    """One DALI batch -> DecodedSamples. Fallback-route samples are decoded by the CPU SampleDecoder;
    bad metadata is skipped and counted, exactly as on the decord path."""

    def __init__(self, fallback: SampleDecoder, counter: SkipCounter) -> None:
        self.fallback, self.counter = fallback, counter

    def __call__(self, outputs: tuple[Any, ...], limit: int | None = None) -> list[DecodedSample]:
        frames, route, meta, txt, info, meta_info, media = outputs
        count = len(route) if limit is None else min(limit, len(route))
        samples = [self._one(i, frames, route, meta, txt, info[i] if np.asarray(info[i]).size else meta_info[i], media)
                   for i in range(count)]
        return [s for s in samples if s is not None]

    def _one(self, i: int, frames: Any, route: Any, meta: Any, txt: Any, info: Any, media: Any) -> DecodedSample | None:
        url, key, ext = split_source_info(_bytes(info).decode("utf-8", "replace"))
        raw: dict[str, Any] = {"__key__": key, "__url__": url}
        for name, member in (("json", meta), ("txt", txt)):
            if np.asarray(member[i]).size:
                raw[name] = _bytes(member[i])
        if int(np.asarray(route[i])) == ROUTE_FALLBACK:
            if np.asarray(media[i]).size:
                raw[ext] = _bytes(media[i])
            sample = self.fallback(raw)
            return sample
        try:
            captions = sample_meta(raw)["captions"]
        except DecodeError as err:
            self.counter.add(err.reason)
            log.warning("skipping sample %s from %s (%s)", key, url, err)
            return None
        return DecodedSample(key, _to_torch(frames[i]), captions)


def _to_torch(tensor: Any) -> torch.Tensor:
    """A DALI sample as a torch tensor on the same device (GPU stays on the GPU: no host copy)."""
    from nvidia.dali.backend import TensorGPU

    if isinstance(tensor, TensorGPU):
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(tensor.shape(), dtype=torch.float32, device=torch.device("cuda", torch.cuda.current_device()))
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream())
        return out
    return torch.from_numpy(np.array(tensor))


def collate_on_device(collate: Collator, samples: list[DecodedSample]) -> VideoTextBatch:
    """Collator output with frames stacked where they are. The Collator pads on the host; for GPU frames it
    gets empty stand-ins (only their clip counts matter to it) and the frames are stacked on the GPU here."""
    if not samples or not samples[0].frames.is_cuda:
        return collate(samples)
    stand_ins = [DecodedSample(s.key, torch.empty(s.frames.shape[0], 0, 0, 0), s.captions) for s in samples]
    batch = collate(stand_ins)
    frames = samples[0].frames.new_zeros(len(samples), batch.clip_mask.shape[1], *samples[0].frames.shape[1:])
    for i, sample in enumerate(samples):
        frames[i] = sample.frames[clip_sources(sample.frames.shape[0], frames.shape[1]).to(sample.frames.device)]
    batch.frames = frames
    return batch


def _fallback(data: DataConfig, num_clips: int, train: bool, seed: int, rank: int,
              counter: SkipCounter) -> SampleDecoder:
    transform = FrameTransform(data.image_size, train, data.train_scale, data.hflip)
    return SampleDecoder(make_decoder("auto"), transform, num_clips, train, WorkerRandom(seed, rank, 3), counter)


def _usable_shards(urls: list[str], counter: SkipCounter, what: str) -> tuple[list[str], list[str]]:
    paths, indexes, bad = checked_shards(urls)
    for _, reason in bad:
        counter.add(reason)
    if not paths:
        raise DataQualityError(f"{what}: none of its {len(urls)} shard(s) is readable: {bad[:3]}")
    return paths, indexes


def _endless_samples(shard_set: ShardSet, index: int, data: DataConfig, batch_size: int, seed: int, rank: int,
                     world: int, convert: OutputConverter) -> Iterator[DecodedSample]:
    """DecodedSamples of one training set for ever; a pipeline that fails is rebuilt with a new seed."""
    paths, indexes = _usable_shards(shard_set.urls, convert.counter, f"training set {shard_set.name!r}")
    for attempt in range(MAX_REBUILDS + 1):
        spec = PipelineSpec(paths, indexes, True, data.num_clips, batch_size, stream_seed(seed, rank, index, attempt),
                            shard_id=rank, num_shards=world, epoch_seed=stream_seed(seed, index, attempt))
        pipe = build_pipeline(spec, data)
        try:
            while True:
                yield from convert(pipe.run())
        except RuntimeError as err:  # DALI leaves a failed pipeline unusable
            convert.counter.add("dali_error", batch_size)
            log.error("DALI pipeline of set %r failed (%s); rebuilding (%d/%d)", shard_set.name, str(err)[:300],
                      attempt + 1, MAX_REBUILDS)
            del pipe
    raise DataQualityError(f"training set {shard_set.name!r}: the DALI pipeline failed {MAX_REBUILDS} times")


def dali_train_batches(data: DataConfig, sets: list[ShardSet], collate: Collator, batch_size: int, rank: int,
                       seed: int) -> Iterator[VideoTextBatch]:
    """Endless training batches: one DALI pipeline per set (sharded by rank), mixed by weight per sample."""
    world = pytorch_worker_info()[1]
    counter = SkipCounter()
    convert = OutputConverter(_fallback(data, data.num_clips, True, seed, rank, counter), counter)
    streams = [_endless_samples(s, i, data, batch_size, seed, rank, world, convert) for i, s in enumerate(sets)]
    rng = random.Random(stream_seed(seed, rank, len(sets), 7))
    samples = streams[0] if len(streams) == 1 else weighted_interleave(streams, [s.weight for s in sets], rng)
    while True:
        yield counter.attach(collate_on_device(collate, list(itertools.islice(samples, batch_size))))


class DaliEvalBatches:
    """Evaluation batches from one un-shuffled DALI reader per rank (shard_id = rank): every sample once
    across ranks, in shard order. Iterable again; each pass builds a fresh pipeline."""

    def __init__(self, data: DataConfig, urls: list[str], collate: Collator, batch_size: int, num_clips: int) -> None:
        self.data, self.urls, self.collate, self.batch_size, self.num_clips = data, urls, collate, batch_size, num_clips

    def __iter__(self) -> Iterator[VideoTextBatch]:
        rank, world, _, _ = pytorch_worker_info()
        counter = SkipCounter()
        convert = OutputConverter(_fallback(self.data, self.num_clips, False, 0, rank, counter), counter)
        paths, indexes = _usable_shards(self.urls, counter, "evaluation shards")
        pipe = build_pipeline(PipelineSpec(paths, indexes, False, self.num_clips, self.batch_size, seed=0,
                                           shard_id=rank, num_shards=world), self.data)
        total = pipe.reader_meta("reader")["epoch_size"]
        mine = (rank + 1) * total // world - rank * total // world  # DALI's contiguous split by shard_id
        pending: list[DecodedSample] = []
        for step in range(math.ceil(mine / self.batch_size)):
            try:
                outputs = pipe.run()
            except RuntimeError as err:
                raise DataQualityError(f"evaluation: the DALI pipeline failed: {str(err)[:500]}") from err
            pending += convert(outputs, limit=mine - step * self.batch_size)
            while len(pending) >= self.batch_size:
                yield counter.attach(collate_on_device(self.collate, pending[:self.batch_size]))
                pending = pending[self.batch_size:]
        if pending:
            yield counter.attach(collate_on_device(self.collate, pending))
