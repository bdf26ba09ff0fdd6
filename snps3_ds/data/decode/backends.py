"""Media decoding behind one interface, plus the per-clip frame sampling rule.

A decoder turns one sample's media bytes into uint8 frames [T, H, W, 3] (RGB) at the sampled indices.
Per-sample backends: decord (frame-accurate seeking from its own index, reads H.264 from memory) and PyAV
(reads everything FFmpeg reads; seeks by timestamp in MP4/WebM/MKV/MOV, which on the short-GOP shards
build_shards writes is the fastest CPU path, and decodes AVI sequentially). `auto` chains them, PyAV first
(see make_decoder), so a clip one backend refuses falls back to the other instead of being lost. DALI
decodes whole batches inside its own pipeline (snps3_ds.data.dali.pipeline) and uses this module's CPU chain for
the samples it cannot take. Images become a one-frame clip.
"""

from __future__ import annotations

import io
import logging
import random
from typing import Protocol

import numpy as np

from snps3_ds.data.errors import DecodeError
from snps3_ds.data.samples import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from snps3_ds.data.decode.pyav import VideoInfo, decode_sampled_pyav

log = logging.getLogger(__name__)
# Containers whose timestamps map frame index to time exactly enough to seek by (AVI often does not).
SEEKABLE_CONTAINERS = ("mp4", "webm", "mkv", "mov")


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


def trim_range(start: float | None, end: float | None, fps: float) -> tuple[int, int | None]:
    """Frame range [first, last) of a json `start`/`end` (seconds) trim; (0, None) when untrimmed."""
    first = max(0, int(start * fps)) if start is not None else 0
    last = int(end * fps) + 1 if end is not None else None
    return first, last


class FrameDecoder(Protocol):
    """What every per-sample decoding backend provides."""

    name: str

    def decode(self, data: bytes, ext: str, num_clips: int, train: bool, rng: random.Random,
               start: float | None = None, end: float | None = None) -> np.ndarray:
        """uint8 RGB frames [T, H, W, 3]: num_clips frames for a video, one for an image."""
        ...


def _check_ext(ext: str) -> None:
    if ext not in VIDEO_EXTENSIONS:
        raise DecodeError("unknown_media", f"no decoder for member .{ext}")


class DecordDecoder:
    """CPU decoding with decord from in-memory bytes (no temp files)."""

    name = "decord"

    def decode(self, data: bytes, ext: str, num_clips: int, train: bool, rng: random.Random,
               start: float | None = None, end: float | None = None) -> np.ndarray:
        if ext in IMAGE_EXTENSIONS:
            return decode_image(data)
        _check_ext(ext)
        import decord  # imported here so the library imports without it

        try:
            reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
            num_frames = len(reader)
            fps = reader.get_avg_fps() or 1.0
        except Exception as err:  # decord raises its own DECORDError and RuntimeError variants
            raise DecodeError("undecodable", str(err)[:200]) from err
        if num_frames <= 0:
            raise DecodeError("zero_frames")
        indices = segment_indices(num_frames, num_clips, train, rng, *trim_range(start, end, fps))
        try:
            return reader.get_batch(indices).asnumpy()
        except Exception as err:
            raise DecodeError("undecodable", str(err)[:200]) from err


class PyAVDecoder:
    """CPU decoding with PyAV: counts frames by demuxing, then seeks to each sampled frame (keyframe before it,
    decode up to it); streams it cannot seek in are decoded from the start up to the last sampled frame."""

    name = "pyav"

    def decode(self, data: bytes, ext: str, num_clips: int, train: bool, rng: random.Random,
               start: float | None = None, end: float | None = None) -> np.ndarray:
        if ext in IMAGE_EXTENSIONS:
            return decode_image(data)
        _check_ext(ext)

        def pick(info: VideoInfo) -> list[int]:
            return segment_indices(info.num_frames, num_clips, train, rng, *trim_range(start, end, info.fps))

        return decode_sampled_pyav(data, pick, seek=ext in SEEKABLE_CONTAINERS)


class FallbackDecoder:
    """Try each backend in turn; the next one runs only when the previous says `undecodable`.

    Other reasons (empty trim range, unknown member) are properties of the sample, not the backend,
    so they are raised at once. `fallbacks` counts samples rescued by a later backend.
    """

    RETRY_REASONS = ("undecodable",)

    def __init__(self, *backends: FrameDecoder) -> None:
        self.backends = backends
        self.name = "+".join(b.name for b in backends)
        self.fallbacks = 0

    def decode(self, data: bytes, ext: str, num_clips: int, train: bool, rng: random.Random,
               start: float | None = None, end: float | None = None) -> np.ndarray:
        error: DecodeError | None = None
        for backend in self.backends:
            try:
                frames = backend.decode(data, ext, num_clips, train, rng, start, end)
            except DecodeError as err:
                if err.reason not in self.RETRY_REASONS:
                    raise
                error = err
                continue
            if error is not None:
                self.fallbacks += 1
                log.debug("%s decoded a sample that failed before (%s)", backend.name, error)
            return frames
        assert error is not None
        raise error


def decode_image(data: bytes) -> np.ndarray:
    """An image as a one-frame clip [1, H, W, 3]."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB"))[None]  # a writable copy for torch
    except Exception as err:
        raise DecodeError("undecodable", str(err)[:200]) from err


def make_decoder(name: str) -> FrameDecoder:
    """The per-sample CPU backend for data.decoder. `auto` and `dali` use PyAV with decord as fallback (for
    `dali` this is the path of the samples DALI cannot decode).

    PyAV first because it is the fastest correct CPU backend: seeking 4 frames per clip on one core of a
    2-core Xeon, on the realdata clips re-encoded to short side 256 with GOP 8, PyAV decoded 84 clips/s,
    torchcodec 0.17 77 and decord 45 (issue 14), and decord fails on a clip PyAV reads; `launch/benchmark.py
    data` prints the PyAV/decord comparison for any shards. decord stays as the fallback."""
    if name == "decord":
        return DecordDecoder()
    if name == "pyav":
        return PyAVDecoder()
    if name in ("auto", "dali"):
        return FallbackDecoder(PyAVDecoder(), DecordDecoder())
    raise ValueError(f"data.decoder: unknown backend {name!r}; available: auto, dali, decord, pyav")
