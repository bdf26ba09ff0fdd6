"""One raw shard sample -> a DecodedSample (frames sampled, transformed; captions or task texts), or None.

Runs inside DataLoader workers (and for DALI's fallback route in the training process). A bad sample never
stops the stream: it is skipped and counted by reason, so the skip-rate guard sees it.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from snps3_ds.data.decode.backends import DecodeError, FrameDecoder
from snps3_ds.data.samples import media_member, sample_meta
from snps3_ds.data.seeds import WorkerRandom
from snps3_ds.data.skips import SkipCounter

log = logging.getLogger(__name__)



@dataclass
class DecodedSample:
    key: str
    frames: torch.Tensor  # [t, 3, S, S], t <= num_clips: normalised float, or uint8 0..255 (the Collator normalises)
    captions: list[str]
    labels: list[int] | None = None  # downstream tasks: one label per caption (see VideoTextBatch.text_labels)
    seed: int | None = None  # the resumable stream's per-sample seed (augmentations follow it)
    position: dict | None = None  # the resumable stream's position after this sample


TaskTexts = Callable[[str, list[str]], "tuple[list[str], list[int] | None] | None"]
"""Downstream tasks: (sample key, its captions) -> (texts, one label per text or None), or None when the video
is not part of the task's split (dropped before decoding; not a data fault). Membership must follow from the
key alone: the training loader asks with no captions to keep only the split's videos in its sample order."""
Transform = Callable[[np.ndarray, random.Random], torch.Tensor]
"""Decoded uint8 frames [T, H, W, 3] -> [t, 3, S, S]: a FrameTransform (normalised float) or its `geometry`
(uint8, for loaders whose Collator normalises into the batch)."""


class SampleDecoder:
    """Raw webdataset sample -> DecodedSample, or None (skipped, counted by reason) when it is bad.

    A bad sample never stops the stream: DecodeErrors carry their reason; any other exception (a codec
    library bug, an odd frame size) is counted as `error_<Type>` so the skip-rate guard still sees it.
    """

    def __init__(self, decoder: FrameDecoder, transform: Transform, num_clips: int, train: bool,
                 rng: WorkerRandom, counter: SkipCounter | None = None, texts: TaskTexts | None = None) -> None:
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
