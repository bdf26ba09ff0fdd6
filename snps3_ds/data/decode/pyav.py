"""PyAV helpers shared by the loader (probe, fallback decode) and the shard builder.

PyAV (FFmpeg) reads every codec and container we meet, including the ones decord refuses (single-frame
MJPEG, VP9 without a duration header), so it is both the per-sample fallback decoder and the reference
that `probe_video` uses to count frames before DALI is asked for frame indices.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from snps3_ds.data.errors import DecodeError


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (frames counted by demuxing)."""

    codec: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int


def _open(data: bytes):
    import av  # imported here so the library imports without PyAV

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as err:  # av raises InvalidDataError, ValueError, ... for garbage input
        raise DecodeError("undecodable", f"cannot open container: {str(err)[:160]}") from err
    if not container.streams.video:
        container.close()
        raise DecodeError("undecodable", "no video stream in the container")
    return container


# FFmpeg's name of the MP4/MOV demuxer: its frame count is the track's sample table, one sample per packet.
SAMPLE_TABLE_FORMATS = ("mov,mp4,m4a,3gp,3g2,mj2",)


def _frame_count(container, stream) -> int:
    """Frames of the stream: the MP4/MOV sample count where the header has one (equal to the packet count on
    every clip we checked, and free), else packets counted by demuxing (leaving the container at its end)."""
    if container.format.name in SAMPLE_TABLE_FORMATS and stream.frames > 0:
        return stream.frames
    return sum(1 for packet in container.demux(stream) if packet.size)


def _info(container) -> VideoInfo:
    """VideoInfo of an open container's first video stream (it may leave the container demuxed to its end)."""
    try:
        stream = container.streams.video[0]
        count = _frame_count(container, stream)
        rate = stream.average_rate or stream.guessed_rate or 0
        fps = float(rate) if rate else 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1e6
        else:
            duration = count / fps if fps else 0.0
        info = VideoInfo(stream.codec_context.name, count, fps or (count / duration if duration else 1.0),
                         duration, stream.codec_context.width, stream.codec_context.height)
    except Exception as err:
        raise DecodeError("undecodable", f"demux failed: {str(err)[:160]}") from err
    if info.num_frames <= 0:
        raise DecodeError("zero_frames", f"{info.codec} stream has no frames")
    return info


def probe_video(data: bytes) -> VideoInfo:
    """Codec, frame count, fps and size of in-memory video bytes, without decoding pixels.

    Frames are counted from demuxed packets because WebM and some MP4 headers carry no frame count (MP4/MOV
    sample tables that have one are read instead: the same number, without reading the stream).
    """
    if not data:
        raise DecodeError("missing_media", "empty media member")
    container = _open(data)
    try:
        return _info(container)
    finally:
        container.close()


def _sequential(container, indices: list[int]) -> np.ndarray:
    """Decode from the start up to the last wanted index (indices past the end repeat the last frame)."""
    wanted, last_needed = set(indices), max(indices)
    frames: dict[int, np.ndarray] = {}
    last_frame = None
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # one decode thread per loader worker: no oversubscription
    try:
        for i, frame in enumerate(container.decode(stream)):
            last_frame = frame
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= last_needed:
                break
    except Exception as err:  # a broken packet mid-stream: keep what decoded before it
        if last_frame is None:
            raise DecodeError("undecodable", f"decode failed: {str(err)[:160]}") from err
    if last_frame is None:
        raise DecodeError("zero_frames", "no frame could be decoded")
    if wanted - frames.keys():
        fill = last_frame.to_ndarray(format="rgb24")
        frames.update({i: fill for i in wanted - frames.keys()})
    return np.stack([frames[i] for i in indices])


def _seeking(container, indices: list[int]) -> np.ndarray:
    """Per index: seek to the keyframe before its timestamp, decode up to it."""
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    rate, base = stream.average_rate or stream.guessed_rate, stream.time_base
    if not rate or not base:
        raise DecodeError("undecodable", "no frame rate or time base to seek by")
    origin, half = stream.start_time or 0, 0.5 / float(rate) / float(base)
    found: dict[int, np.ndarray] = {}
    try:
        for index in sorted(set(indices)):
            target = origin + index / float(rate) / float(base)
            container.seek(int(target), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target - half:
                    found[index] = frame.to_ndarray(format="rgb24")
                    break
    except Exception as err:  # av errors while seeking or decoding
        raise DecodeError("undecodable", f"seek-decode failed: {str(err)[:160]}") from err
    if len(found) != len(set(indices)):
        raise DecodeError("undecodable", f"seeking found {len(found)} of {len(set(indices))} frames")
    return np.stack([found[i] for i in indices])


def decode_indices_pyav(data: bytes, indices: list[int]) -> np.ndarray:
    """uint8 RGB frames [len(indices), H, W, 3] at the given decode-order indices, decoding sequentially.

    Sequential decoding (no seeking) is the one method that works for every stream PyAV can open. Indices
    past the last decodable frame repeat the last one (container frame counts can overstate by a frame).
    """
    container = _open(data)
    try:
        return _sequential(container, indices)
    finally:
        container.close()


def decode_indices_seeking(data: bytes, indices: list[int]) -> np.ndarray:
    """uint8 RGB frames [len(indices), H, W, 3]: for each index, seek to the keyframe before its timestamp and
    decode up to it. Much less work than decoding from the start on long clips; exact for constant-frame-rate
    streams (what build_shards writes). Raises DecodeError when it cannot seek, so the caller can fall back
    to decode_indices_pyav."""
    container = _open(data)
    try:
        return _seeking(container, indices)
    finally:
        container.close()


def decode_sampled_pyav(data: bytes, pick: Callable[[VideoInfo], list[int]], seek: bool) -> np.ndarray:
    """Frames at pick(info) with one container open: count frames, then seek-decode (or, when `seek` is
    False or seeking fails, decode sequentially)."""
    if not data:
        raise DecodeError("missing_media", "empty media member")
    container = _open(data)
    try:
        indices = pick(_info(container))
        if seek:
            try:
                return _seeking(container, indices)
            except DecodeError:
                pass
        container.seek(0)
        return _sequential(container, indices)
    except DecodeError:
        raise
    except Exception as err:  # e.g. a stream that cannot seek back to its start
        raise DecodeError("undecodable", f"decode failed: {str(err)[:160]}") from err
    finally:
        container.close()
