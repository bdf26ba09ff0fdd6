"""DecodedSamples -> VideoTextBatch: stack clips, tokenise, mask (MLM or MSSM), choose LVWM words.

A sample with fewer frames than clips (an image: one frame) is repeated over the clips, as the reference
repeats an image n_clips times (REFERENCE §4.2), rather than padded with blank clips: a Video Swin tubelet
then holds the image twice instead of the image and a black frame, and an image's logsumexp over clips
gets the same +log T as a video's, so mixed image/video batches are not biased by clip count.

The per-batch random draws (caption choice, masks) come from the resumable stream's sample seeds when
they are there, so a resumed run reproduces them; otherwise from the worker's own generator.
"""

from __future__ import annotations

import random

import torch
from torch.utils.data import get_worker_info
from transformers import PreTrainedTokenizerBase

from snps3_ds.config import MaskingConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.decode.sample import DecodedSample
from snps3_ds.data.decode.transforms import normalize
from snps3_ds.data.seeds import WorkerRandom, stream_seed
from snps3_ds.data.text.mssm import MssmVocab, choose_words, mssm_mask
from snps3_ds.data.text.tokens import SpecialIds, mlm_mask, tokenize


def clip_sources(frames: int, clips: int) -> torch.Tensor:
    """Which of a sample's `frames` fills each of `clips` clips: the first `clips`, or, when there are fewer
    frames, each repeated in order (one frame -> all clips; 2 frames in 4 clips -> 0, 0, 1, 1)."""
    if frames < 1:
        raise ValueError("a sample without frames cannot fill a clip")
    return (torch.arange(clips) * frames // clips) if frames < clips else torch.arange(clips)


class Collator:
    """DecodedSamples -> VideoTextBatch: stack clips, tokenise captions, mask (MLM or MSSM), choose LVWM words.

    Training draws one caption per video; evaluation (masking None) keeps them all (text_video_index maps
    them back) and neither masks nor chooses words. With random_truncate (pre-training), a caption longer
    than max_len keeps a random window of its wordpieces instead of its head. With masking.significance_dir
    set, the mined table is read here, once per process, and checked against the tokenizer's vocabulary.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_len: int, num_clips: int,
                 masking: MaskingConfig | None, train: bool, rng: WorkerRandom,
                 random_truncate: bool = False) -> None:
        self.tokenizer, self.max_len, self.num_clips = tokenizer, max_len, num_clips
        self.random_truncate = random_truncate and train
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
        ids, mask = tokenize(self.tokenizer, captions, self.max_len, rng if self.random_truncate else None)
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
        """Frames [B, num_clips, 3, S, S] float and the clip mask. uint8 samples (the CPU loaders') are converted
        and normalised straight into the batch tensor, which a DataLoader worker allocates in shared memory: no
        per-sample float copies, and nothing to copy again when the batch travels to the training process."""
        size = samples[0].frames.shape[-3:]
        frames = _batch_tensor((len(samples), self.num_clips, *size))
        clip_mask = torch.zeros(len(samples), self.num_clips, dtype=torch.bool)
        for i, sample in enumerate(samples):
            frames[i].copy_(sample.frames[clip_sources(sample.frames.shape[0], self.num_clips)])
            if sample.frames.dtype == torch.uint8:
                normalize(frames[i])  # right after the copy, while this sample is still in the cache
            clip_mask[i] = True
        return frames, clip_mask

    def _torch_generator(self) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.rng.get().getrandbits(63))
        return self._generator


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float tensor; in a DataLoader worker its storage is shared memory from the start, as
    torch's default_collate allocates it, so sending the batch to the training process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(shape)
    numel = 1
    for side in shape:
        numel *= side
    storage = torch.empty(0)._typed_storage()._new_shared(numel)
    return torch.empty(0).new(storage).view(shape)
