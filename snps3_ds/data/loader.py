"""The training and evaluation loaders: shards -> decode + sample frames + transform -> collate -> batches.

Stages are small picklable callables run inside DataLoader workers (snps3_ds.data.decode.sample,
snps3_ds.data.collate); with DALI, the pipeline in snps3_ds.data.dali decodes instead. In training every
random draw (frame positions, crops, caption choice, masks) follows the seed each sample gets from its
place in the run's global order, so it does not depend on which rank or worker reads the sample and a
resumed run (on any world size) reproduces it.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from snps3_ds.config import DataConfig, MaskingConfig
from snps3_ds.data.batch import BatchStream, VideoTextBatch
from snps3_ds.data.collate import Collator
from snps3_ds.data.decode.backends import make_decoder
from snps3_ds.data.decode.sample import DecodedSample, SampleDecoder, TaskTexts
from snps3_ds.data.decode.transforms import FrameTransform
from snps3_ds.data.seeds import WorkerRandom, stream_seed
from snps3_ds.data.skips import MonitoredBatches, SkipCounter, SkipMonitor
from snps3_ds.data.stream.order import GlobalOrder, IndexedSet
from snps3_ds.data.stream.position import ResumableBatches, resume_start
from snps3_ds.data.stream.reader import BatchPlan, BatchStages, GlobalBatches
from snps3_ds.data.stream.remote import ShardFiles, is_url
from snps3_ds.data.stream.shards import ShardSet, eval_stream, resolve_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamPlacement:
    """Which share of the training stream this process reads, and the run seed its order derives from."""

    rank: int = 0
    world_size: int = 1
    seed: int = 0


def training_sets(data: DataConfig) -> list[ShardSet]:
    """data.train_sets as resolved ShardSets, or data.train_shards as one set of weight 1."""
    if data.train_sets and data.train_shards:
        raise ValueError("data.train_shards and data.train_sets are both set; put every dataset in train_sets")
    if not data.train_sets:
        return [ShardSet(resolve_shards(data.train_shards, data.remote), 1.0, "train")]
    return [ShardSet(resolve_shards(s.shards, data.remote), s.weight, s.name or f"set{i}")
            for i, s in enumerate(data.train_sets)]


def build_train_loader(data: DataConfig, masking: MaskingConfig, tokenizer: PreTrainedTokenizerBase,
                       micro_batch_size: int, placement: StreamPlacement = StreamPlacement(),
                       resume: dict[str, Any] | None = None, texts: TaskTexts | None = None) -> BatchStream:
    """Infinite training batches of micro_batch_size samples for this rank (a BatchStream).

    The batches are this rank's share of the run's global sample order (snps3_ds.data.stream.reader): the
    n-th batch is global micro-batch n x world + rank counted from the start position. Its `state_dict()`
    is the stream position to save in a checkpoint and pass back as `resume` to continue where it stopped
    (exactly, sample for sample, on the CPU-decode path), on the same or on another number of ranks.
    Raises DataQualityError when the skip rate passes data.max_skip_rate.
    """
    rank, seed, world_size = placement.rank, placement.seed, placement.world_size
    sets = training_sets(data)
    collate = Collator(tokenizer, data.max_text_len, data.num_clips, masking, True, WorkerRandom(seed, rank, 2),
                       random_truncate=data.random_truncate and texts is None)  # fine-tuning keeps the head
    monitor = SkipMonitor(data.max_skip_rate, data.skip_rate_warmup, "training data")
    if _use_dali(data.decoder, texts, [url for s in sets for url in s.urls]):
        from snps3_ds.data.dali.batches import dali_train_batches

        consumed = int((resume or {}).get("dali_batches", 0))
        if consumed:  # DALI's reader cannot seek: a fresh order instead of replaying the consumed start
            log.warning("resuming a DALI training stream after %d batches with a new shuffle seed: no sample "
                        "order is replayed, but exact-sample resume needs data.decoder=decord or pyav", consumed)
        dali_seed = stream_seed(seed, consumed, 17) if consumed else seed
        return CountedBatches(dali_train_batches(data, sets, collate, micro_batch_size, rank, dali_seed), monitor,
                              consumed)
    counter = SkipCounter()
    transform = FrameTransform(data.image_size, True, data.train_scale, data.hflip).geometry  # the Collator normalises
    decoder = SampleDecoder(make_decoder(data.decoder), transform, data.num_clips, True, WorkerRandom(seed, rank, 1),
                            counter, texts)
    dropped: dict[str, int] = {}
    order = _global_order(sets, seed, data, dropped, texts)
    start = resume_start(resume, order.layout)
    stages = BatchStages(decoder, collate, counter.attach, counter.skip)
    dataset = GlobalBatches(order, BatchPlan(rank, world_size, micro_batch_size, max(1, data.num_workers)), stages,
                            start, data.remote)
    dataset.dropped = dropped
    loader = DataLoader(dataset, batch_size=None, num_workers=data.num_workers, worker_init_fn=_ignore_stop_signals,
                        persistent_workers=data.num_workers > 0, prefetch_factor=4 if data.num_workers else None)
    return ResumableBatches(iter(loader), monitor, order.layout, start, resume)


def _global_order(sets: list[ShardSet], seed: int, data: DataConfig, dropped: dict[str, int],
                  texts: TaskTexts | None) -> GlobalOrder:
    """The run's sample order over the training sets; with task texts, only the videos of the task's split
    (decided by key: the hook is asked with no captions)."""
    def note_dropped(url: str, count: int) -> None:
        dropped[url] = count
        log.warning("%s: %d sample(s) cut off (truncated shard); they are left out of training", url, count)

    keep = (lambda key: texts(key, []) is not None) if texts is not None else None
    files = ShardFiles(data.remote)
    order = GlobalOrder([IndexedSet(s.name, s.urls, s.weight, note_dropped, keep, files) for s in sets], seed,
                        data.shuffle_window)
    files.close()
    return order


class CountedBatches(MonitoredBatches):
    """The DALI training stream's resume state: only how many batches were taken (see build_train_loader)."""

    def __init__(self, source, monitor: SkipMonitor, consumed: int = 0) -> None:
        super().__init__(source, monitor)
        self.consumed = consumed

    def __next__(self) -> VideoTextBatch:
        batch = super().__next__()
        self.consumed += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"dali_batches": self.consumed}


def _ignore_stop_signals(_worker_id: int) -> None:
    """The launcher signals the whole process tree on preemption, but only the training process should
    react (it finishes the step and saves); a worker that died first would fail the last fetches."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_eval_loader(data: DataConfig, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                      num_clips: int, texts: TaskTexts | None = None) -> MonitoredBatches:
    """Held-out batches with every caption (or every task text), centre crops and centre frames; each sample
    exactly once across ranks and workers, in a fixed order. Iterable again for every evaluation pass."""
    urls = resolve_shards(data.eval_shards, data.remote)
    collate = Collator(tokenizer, data.max_text_len, num_clips, None, False, WorkerRandom(0, 0, 2))
    monitor = SkipMonitor(data.max_skip_rate, data.skip_rate_warmup, "evaluation data")
    if _use_dali(data.decoder, texts, urls):
        from snps3_ds.data.dali.batches import DaliEvalBatches

        return MonitoredBatches(DaliEvalBatches(data, urls, collate, batch_size, num_clips), monitor)
    counter = SkipCounter()
    decoder = SampleDecoder(make_decoder(data.decoder), FrameTransform(data.image_size, False).geometry, num_clips,
                            False, WorkerRandom(0, 0, 1), counter, texts)
    pipeline = eval_stream(urls, counter.shard_handler, data.remote).compose(
        wds.map(decoder), wds.select(_is_sample), wds.batched(batch_size, collation_fn=collate, partial=True),
        wds.map(counter.attach))
    return MonitoredBatches(DataLoader(pipeline, batch_size=None, num_workers=data.num_workers), monitor)


def _use_dali(decoder: str, texts: TaskTexts | None = None, urls: list[str] | None = None) -> bool:
    """DALI for `dali`, and for `auto` when a GPU and DALI are both there (DESIGN §3.2).

    The DALI readers do not join downstream-task annotations (yet) and read local files only: `auto` then
    decodes on the CPU, and an explicit `dali` is an error."""
    remote = next((url for url in urls or [] if is_url(url)), None)
    if decoder == "dali":
        if texts is not None:
            raise ValueError("data.decoder=dali does not take downstream-task annotations; use auto, decord or pyav")
        if remote is not None:
            raise ValueError(f"data.decoder=dali reads local shards only, got {remote}; use auto, decord or pyav")
        return True
    if texts is not None or remote is not None:
        return False
    if decoder != "auto" or not torch.cuda.is_available():
        return False
    from snps3_ds.data.dali.pipeline import dali_available

    return dali_available()


def _is_sample(sample: DecodedSample | None) -> bool:
    return sample is not None
