"""The one batch contract: every loader produces a VideoTextBatch and every task consumes one; and the
contract of the endless training stream that hands them to the trainer."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch


BY_VALUE_BYTES = 1 << 16  # tensors up to 64 KiB pickle by value (see VideoTextBatch.__getstate__)


@dataclass(frozen=True)
class _ByValue:
    """A small tensor's bytes in a pickled VideoTextBatch (numpy pickles by value; torch by shared memory)."""

    array: Any


@dataclass
class VideoTextBatch:
    """B videos (or images as one-clip videos) and N captions that describe them.

    Shapes (T = clips per video, L = max_text_len):
      keys              list[str], B sample keys (for logging, resume and error reports)
      frames            float [B, T, 3, H, W], normalised with ImageNet mean/std
      clip_mask         bool  [B, T], True for real clips (the loaders repeat an image over its clips,
                        as the reference, so theirs are all True; False marks padding a caller adds)
      text_ids          long  [N, L], unmasked `[CLS] caption [SEP] [PAD]...`
      text_mask         long  [N, L], 1 for real tokens
      text_video_index  long  [N], which of the B videos caption n describes
      mlm_ids           long  [N, L], text_ids after masking (equal to text_ids when not masking)
      mlm_labels        long  [N, L], original id at masked positions, -100 elsewhere
      word_positions    long  [N, W] or None, LVWM: positions in text_ids of W chosen (significant)
                        words per caption, padded by repetition; None when no loader stage chose them
      skipped           dict[str, int], samples the loader skipped since its previous batch, by reason
                        (e.g. {"undecodable": 2}); summed by the loader's SkipMonitor, never by tasks
      text_labels       long  [N] or None, downstream tasks: the answer id of a question (QA, -1 when the
                        answer is outside the vocabulary) or 1/0 for the right/wrong option (multi-choice)
      stream_position   dict or None, the training stream's position after this batch (resume), set by
                        the resumable loader; tasks ignore it

    In training N == B and text_video_index == arange(B) (one caption drawn per video);
    evaluation keeps every caption of a video, so N >= B.
    """

    keys: list[str]
    frames: torch.Tensor
    clip_mask: torch.Tensor
    text_ids: torch.Tensor
    text_mask: torch.Tensor
    text_video_index: torch.Tensor
    mlm_ids: torch.Tensor
    mlm_labels: torch.Tensor
    word_positions: torch.Tensor | None = None
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    text_labels: torch.Tensor | None = None
    stream_position: dict | None = None

    @property
    def num_videos(self) -> int:
        return self.frames.shape[0]

    @property
    def num_texts(self) -> int:
        return self.text_ids.shape[0]

    def to(self, device: torch.device | str, frames_dtype: torch.dtype | None = None) -> "VideoTextBatch":
        """Move every tensor; frames may also change dtype (the engine's compute precision)."""
        moved = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                dtype = frames_dtype if f.name == "frames" else None
                value = value.to(device=device, dtype=dtype, non_blocking=True)
            moved[f.name] = value
        return VideoTextBatch(**moved)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled state: small CPU tensors travel by value (as numpy arrays), large ones as torch shares them.

        Why: a DataLoader worker hands a batch to the training process by pickling it, and torch sends every
        tensor through its own shared-memory segment plus a file-descriptor hand-over; for the masks and token
        ids (a few KB each) that set-up cost more than copying the bytes (about 5% of a loader worker's time on
        the demo shards). The frames (MBs, allocated in shared memory by the Collator) still go by descriptor.
        """
        state = dict(self.__dict__)
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.requires_grad \
                    and value.nbytes <= BY_VALUE_BYTES and not value.is_shared():
                state[name] = _ByValue(value.numpy())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: torch.from_numpy(v.array) if isinstance(v, _ByValue) else v for k, v in state.items()})

    def pin_memory(self) -> "VideoTextBatch":
        """Called by DataLoader(pin_memory=True) so host-to-GPU copies can be asynchronous."""
        pinned = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in pinned.items():
            if isinstance(value, torch.Tensor):
                pinned[name] = value.pin_memory()
        return VideoTextBatch(**pinned)


class BatchStream(Protocol):
    """The training stream the trainer reads: endless batches, a position to save, skip counts to log.

    `state_dict()` is this rank's position after the last batch taken, JSON-like plain data; the loader
    that made the stream takes it back as `resume` and continues with the next batch. `stats()` gives the
    `data/...` skip counters for the metrics log; `close()` stops its reader processes (call it on every
    way out, errors included).
    """

    def __iter__(self) -> Iterator[VideoTextBatch]: ...

    def __next__(self) -> VideoTextBatch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...
