"""From raw shard samples to VideoTextBatch: decode + sample frames + transform, then tokenise + mask.

Stages are small picklable callables run inside DataLoader workers. Each worker owns its random
generators, seeded from (run seed, rank, worker), so masks and crops differ across ranks and workers
and are reproducible.
"""

from __future__ import annotations

import logging
import random
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from snps3_ds.config import DataConfig, MaskingConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.decode import DecodeError, FrameDecoder, make_decoder
from snps3_ds.data.mssm import MssmVocab, choose_words, mssm_mask
from snps3_ds.data.samples import MEDIA_EXTENSIONS, media_member, sample_meta
from snps3_ds.data.resume import ResumableBatches, resume_positions
from snps3_ds.data.shards import ShardSet, eval_stream, resolve_shards, stream_seed
from snps3_ds.data.skips import MonitoredBatches, SkipCounter, SkipMonitor
from snps3_ds.data.stream import ResumableSamples, next_rotation
from snps3_ds.data.text import SpecialIds, mlm_mask, tokenize
from snps3_ds.data.transforms import FrameTransform

log = logging.getLogger(__name__)
__all__ = ["MEDIA_EXTENSIONS", "Collator", "DecodedSample", "SampleDecoder", "build_eval_loader", "build_train_loader"]


@dataclass
class DecodedSample:
    key: str
    frames: torch.Tensor  # [t, 3, S, S], t <= num_clips
    captions: list[str]
    labels: list[int] | None = None  # downstream tasks: one label per caption (see VideoTextBatch.text_labels)
    seed: int | None = None  # the resumable stream's per-sample seed (augmentations follow it)
    position: dict | None = None  # the resumable stream's position after this sample


TaskTexts = Callable[[str, list[str]], "tuple[list[str], list[int] | None] | None"]
"""Downstream tasks: (sample key, its captions) -> (texts, one label per text or None), or None when the video
is not part of the task's split (dropped before decoding; not a data fault)."""


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
    """Raw webdataset sample -> DecodedSample, or None (skipped, counted by reason) when it is bad.

    A bad sample never stops the stream: DecodeErrors carry their reason; any other exception (a codec
    library bug, an odd frame size) is counted as `error_<Type>` so the skip-rate guard still sees it.
    """

    def __init__(self, decoder: FrameDecoder, transform: FrameTransform, num_clips: int, train: bool,
                 rng: _WorkerRandom, counter: SkipCounter | None = None, texts: TaskTexts | None = None) -> None:
        self.decoder, self.transform, self.num_clips, self.train, self.rng = decoder, transform, num_clips, train, rng
        self.counter = counter if counter is not None else SkipCounter()
        self.texts = texts

    @property
    def skipped(self) -> Counter[str]:
        """Skips by reason in this process since the decoder was made."""
        return self.counter.total

    def __call__(self, raw: dict[str, Any]) -> DecodedSample | None:
        key = raw.get("__key__", "?")
        seed = raw.get("__seed__")
        try:
            meta = sample_meta(raw)
            captions, labels = meta["captions"], None
            if self.texts is not None:
                joined = self.texts(key, captions)
                if joined is None:
                    return None  # not in this task's split
                captions, labels = joined
            rng = random.Random(seed) if seed is not None else self.rng.get()
            ext, data = media_member(raw)
            frames = self.decoder.decode(data, ext, self.num_clips, self.train, rng, meta.get("start"), meta.get("end"))
            return DecodedSample(key, self.transform(frames, rng), captions, labels, seed, raw.get("__pos__"))
        except DecodeError as err:
            reason, detail = err.reason, str(err)
        except Exception as err:  # noqa: BLE001 - one sample must not end the run; counted and logged
            reason, detail = f"error_{type(err).__name__}", str(err)[:200]
        self.counter.add(reason)
        log.warning("skipping sample %s from %s (%s); skipped so far: %s", key, raw.get("__url__", "?"), detail,
                    dict(self.counter.total))
        return None


class Collator:
    """DecodedSamples -> VideoTextBatch: pad clips, tokenise captions, mask (MLM or MSSM), choose LVWM words.

    Training draws one caption per video; evaluation (masking None) keeps them all (text_video_index maps
    them back) and neither masks nor chooses words. With masking.significance_dir set, the mined table is
    read here, once per process, and checked against the tokenizer's vocabulary.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_len: int, num_clips: int,
                 masking: MaskingConfig | None, train: bool, rng: _WorkerRandom) -> None:
        self.tokenizer, self.max_len, self.num_clips = tokenizer, max_len, num_clips
        self.masking, self.train, self.rng = masking, train, rng
        self.special = SpecialIds.from_tokenizer(tokenizer)
        self.words: MssmVocab | None = None
        if masking is not None and masking.significance_dir:
            vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            self.words = MssmVocab.load(masking.significance_dir, masking.top_k, vocab)
        self._generator: torch.Generator | None = None

    def __call__(self, samples: list[DecodedSample]) -> VideoTextBatch:
        frames, clip_mask = self._stack_frames(samples)
        rng, generator = self._generators(samples)
        captions, owners, text_labels = [], [], []
        for index, sample in enumerate(samples):
            chosen = [rng.randrange(len(sample.captions))] if self.train else range(len(sample.captions))
            captions += [sample.captions[i] for i in chosen]
            owners += [index] * len(chosen)
            if sample.labels is not None:
                text_labels += [sample.labels[i] for i in chosen]
        if text_labels and len(text_labels) != len(captions):
            raise ValueError("a batch mixes samples with and without task labels")
        ids, mask = tokenize(self.tokenizer, captions, self.max_len)
        mlm_ids, labels, words = self._mask(ids, mask, generator)
        return VideoTextBatch(keys=[s.key for s in samples], frames=frames, clip_mask=clip_mask, text_ids=ids,
                              text_mask=mask, text_video_index=torch.tensor(owners), mlm_ids=mlm_ids, mlm_labels=labels,
                              word_positions=words, text_labels=torch.tensor(text_labels) if text_labels else None,
                              stream_position=samples[-1].position)

    def _generators(self, samples: list[DecodedSample]) -> tuple[random.Random, torch.Generator]:
        """Per-batch generators from the stream's sample seeds (exact resume), else this worker's own."""
        if samples and samples[0].seed is not None:
            rng = random.Random(stream_seed(samples[0].seed, 11))
            return rng, torch.Generator().manual_seed(rng.getrandbits(63))
        return self.rng.get(), self._torch_generator()

    def _mask(self, ids: torch.Tensor, mask: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(mlm_ids, mlm_labels, word_positions or None), all drawn from `generator`."""
        if self.masking is None:
            return ids.clone(), torch.full_like(ids, -100), None
        if self.masking.kind == "mssm":
            mlm_ids, labels = mssm_mask(ids, mask, self.special, self.words, self.masking, generator)
        else:
            mlm_ids, labels = mlm_mask(ids, mask, self.special, self.masking, generator)
        words = None
        if self.words is not None:
            words = choose_words(ids, mask, self.special, self.words.significant, self.masking.word_chosen_num,
                                 generator)
        return mlm_ids, labels, words

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


def training_sets(data: DataConfig) -> list[ShardSet]:
    """data.train_sets as resolved ShardSets, or data.train_shards as one set of weight 1."""
    if data.train_sets and data.train_shards:
        raise ValueError("data.train_shards and data.train_sets are both set; put every dataset in train_sets")
    if not data.train_sets:
        return [ShardSet(resolve_shards(data.train_shards), 1.0, "train")]
    return [ShardSet(resolve_shards(s.shards), s.weight, s.name or f"set{i}") for i, s in enumerate(data.train_sets)]


def build_train_loader(data: DataConfig, masking: MaskingConfig, tokenizer: PreTrainedTokenizerBase,
                       micro_batch_size: int, rank: int, seed: int, world_size: int = 1,
                       resume: dict[str, Any] | None = None, texts: TaskTexts | None = None) -> MonitoredBatches:
    """Infinite training batches of micro_batch_size samples for this rank.

    An iterator with `.stats()` (skip counts) and, on the CPU-decode path, `.state_dict()`: the stream
    position to save in a checkpoint and pass back as `resume` to continue exactly where it stopped.
    Raises DataQualityError when the skip rate passes data.max_skip_rate.
    """
    sets = training_sets(data)
    collate = Collator(tokenizer, data.max_text_len, data.num_clips, masking, True, _WorkerRandom(seed, rank, 2))
    monitor = SkipMonitor(data.max_skip_rate, data.skip_rate_warmup, "training data")
    if _use_dali(data.decoder, texts):
        from snps3_ds.data.dali_loader import dali_train_batches

        consumed = int((resume or {}).get("dali_batches", 0))
        if consumed:  # DALI's reader cannot seek: a fresh order instead of replaying the consumed start
            log.warning("resuming a DALI training stream after %d batches with a new shuffle seed: no sample "
                        "order is replayed, but exact-sample resume needs data.decoder=decord or pyav", consumed)
        dali_seed = stream_seed(seed, consumed, 17) if consumed else seed
        return CountedBatches(dali_train_batches(data, sets, collate, micro_batch_size, rank, dali_seed), monitor,
                              consumed)
    counter = SkipCounter()
    decoder = SampleDecoder(make_decoder(data.decoder), FrameTransform(data.image_size, True, data.train_scale, data.hflip),
                            data.num_clips, True, _WorkerRandom(seed, rank, 1), counter, texts)
    workers = max(1, data.num_workers)
    samples = ResumableSamples([(s.name, s.urls, s.weight) for s in sets], seed, rank, world_size, workers,
                               data.shuffle_window, on_error=counter.skip)
    state = resume_positions(resume, samples.layout, workers)
    samples.positions, samples.rotation = state.positions, next_rotation(state.batches, workers)
    pipeline = wds.DataPipeline(samples, wds.map(decoder), wds.select(_is_sample),
                                wds.batched(micro_batch_size, collation_fn=collate, partial=False),
                                wds.map(counter.attach))
    loader = DataLoader(pipeline, batch_size=None, num_workers=data.num_workers, worker_init_fn=_ignore_stop_signals,
                        persistent_workers=data.num_workers > 0, prefetch_factor=4 if data.num_workers else None)
    return ResumableBatches(iter(loader), monitor, samples.layout, state)


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
    urls = resolve_shards(data.eval_shards)
    collate = Collator(tokenizer, data.max_text_len, num_clips, None, False, _WorkerRandom(0, 0, 2))
    monitor = SkipMonitor(data.max_skip_rate, data.skip_rate_warmup, "evaluation data")
    if _use_dali(data.decoder, texts):
        from snps3_ds.data.dali_loader import DaliEvalBatches

        return MonitoredBatches(DaliEvalBatches(data, urls, collate, batch_size, num_clips), monitor)
    counter = SkipCounter()
    decoder = SampleDecoder(make_decoder(data.decoder), FrameTransform(data.image_size, False), num_clips, False,
                            _WorkerRandom(0, 0, 1), counter, texts)
    pipeline = eval_stream(urls, handler=counter.shard_handler).compose(
        wds.map(decoder), wds.select(_is_sample), wds.batched(batch_size, collation_fn=collate, partial=True),
        wds.map(counter.attach))
    return MonitoredBatches(DataLoader(pipeline, batch_size=None, num_workers=data.num_workers), monitor)


def _use_dali(decoder: str, texts: TaskTexts | None = None) -> bool:
    """DALI for `dali`, and for `auto` when a GPU and DALI are both there (DESIGN §3.2).

    The DALI readers do not join downstream-task annotations (yet): `auto` then decodes on the CPU,
    and an explicit `dali` is an error."""
    if decoder == "dali":
        if texts is not None:
            raise ValueError("data.decoder=dali does not take downstream-task annotations; use auto, decord or pyav")
        return True
    if texts is not None:
        return False
    if decoder != "auto" or not torch.cuda.is_available():
        return False
    from snps3_ds.data.dali import dali_available

    return dali_available()


def _is_sample(sample: DecodedSample | None) -> bool:
    return sample is not None
