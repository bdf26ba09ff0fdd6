"""Media decoding behind one interface, plus the per-clip frame sampling rule.

A decoder turns one sample's media bytes into uint8 frames [T, H, W, 3] (RGB) at the sampled indices.
decord is the CPU backend (it reads H.264 from memory); DALI's GPU pipeline arrives behind the same
interface later. Images become a one-frame clip.
"""

from __future__ import annotations

import io
import random
from typing import Protocol

import numpy as np

VIDEO_EXTENSIONS = ("mp4", "webm", "avi", "mkv", "mov")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class DecodeError(RuntimeError):
    """A sample whose media cannot be decoded; the loader skips it and counts the reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def segment_indices(num_frames: int, num_clips: int, train: bool, rng: random.Random,
                    first: int = 0, last: int | None = None) -> list[int]:
    """Split frames [first, last) into num_clips equal segments and take one frame from each:
    a random one in training, the centre one in evaluation. Short videos repeat frames."""
    last = num_frames if last is None else min(last, num_frames)
    if last <= first:
        raise DecodeError("empty_range", f"no frames in [{first}, {last}) of {num_frames}")
    span = (last - first) / num_clips
    indices = []
    for clip in range(num_clips):
        lo = first + span * clip
        offset = rng.random() * span if train else span / 2
        indices.append(min(int(lo + offset), last - 1))
    return indices


class FrameDecoder(Protocol):
    """What every decoding backend provides."""

    name: str

    def decode(self, data: bytes, ext: str, num_clips: int, train: bool, rng: random.Random,
               start: float | None = None, end: float | None = None) -> np.ndarray:
        """uint8 RGB frames [T, H, W, 3]: num_clips frames for a video, one for an image."""
        ...


class DecordDecoder:
    """CPU decoding with decord from in-memory bytes (no temp files)."""

    name = "decord"

    def decode(self, data: bytes, ext: str, num_clips: int, train: bool, rng: random.Random,
               start: float | None = None, end: float | None = None) -> np.ndarray:
        if ext in IMAGE_EXTENSIONS:
            return decode_image(data)
        if ext not in VIDEO_EXTENSIONS:
            raise DecodeError("unknown_media", f"no decoder for member .{ext}")
        import decord  # imported here so the library imports without it

        try:
            reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
            num_frames = len(reader)
            fps = reader.get_avg_fps() or 1.0
        except Exception as err:  # decord raises its own DECORDError and RuntimeError variants
            raise DecodeError("undecodable", str(err)[:200]) from err
        if num_frames <= 0:
            raise DecodeError("zero_frames")
        first = int(start * fps) if start is not None else 0
        last = int(end * fps) + 1 if end is not None else None
        indices = segment_indices(num_frames, num_clips, train, rng, first, last)
        try:
            return reader.get_batch(indices).asnumpy()
        except Exception as err:
            raise DecodeError("undecodable", str(err)[:200]) from err


def decode_image(data: bytes) -> np.ndarray:
    """An image as a one-frame clip [1, H, W, 3]."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))[None]
    except Exception as err:
        raise DecodeError("undecodable", str(err)[:200]) from err


def make_decoder(name: str) -> FrameDecoder:
    """The backend named by data.decoder."""
    if name == "decord":
        return DecordDecoder()
    raise ValueError(f"data.decoder: unknown backend {name!r}; available: decord")
