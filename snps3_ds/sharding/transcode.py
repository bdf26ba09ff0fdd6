"""One SourceItem -> the members of one shard sample (DESIGN §3.1): media checked, optionally trimmed, resized
and re-encoded with PyAV, plus the json with captions and the media facts the loaders use.

Every refusal is a DecodeError whose reason goes into shards.json: missing_file, undecodable, zero_frames,
empty_caption, bad_manifest_line.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from snps3_ds.data.samples import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from snps3_ds.data.errors import DecodeError
from snps3_ds.data.decode.pyav import VideoInfo, decode_indices_pyav, probe_video
from snps3_ds.datasets.base import SourceItem

ENCODERS = {"h264": ("libx264", "mp4"), "vp9": ("libvpx-vp9", "webm")}


@dataclass(frozen=True)
class EncodeOptions:
    """How media are written. codec `copy` keeps the source bytes (a trim is then stored as json start/end)."""

    codec: str = "copy"  # copy | h264 | vp9
    short_side: int | None = None  # resize so the short side is this many pixels (never upscales)
    fps: float | None = None  # resample to this frame rate
    gop: int = 8  # keyframe interval when re-encoding: short, so loaders seek cheaply to sampled frames
    crf: int | None = None  # quality; default 23 (H.264) / 32 (VP9)
    jpeg_quality: int = 90


def prepare_sample(item: SourceItem, options: EncodeOptions) -> dict[str, Any]:
    """ShardWriter.write keyword arguments for `item`, or DecodeError with the reason it was skipped."""
    if item.error:
        raise DecodeError("bad_manifest_line", item.error)
    if not item.captions:
        raise DecodeError("empty_caption", "no non-empty caption")
    data, ext = _read(item)
    if item.kind == "image" or ext in IMAGE_EXTENSIONS:
        media, facts = prepare_image(data, options)
        member = "jpg"
    elif ext in VIDEO_EXTENSIONS:
        media, facts, member = prepare_video(data, ext, item.start, item.end, options)
    else:
        raise DecodeError("undecodable", f"unknown media extension .{ext}")
    meta = {"captions": item.captions, "source": item.source, **facts, **item.extra}
    return {"key": item.key, "members": {member: media, "json": json.dumps(meta).encode("utf-8")},
            "codec": facts["codec"], "duration": facts["duration"]}


def _read(item: SourceItem) -> tuple[bytes, str]:
    if item.data is not None:
        return item.data, (item.ext or "").lower()
    if item.path is None or not item.path.is_file():
        raise DecodeError("missing_file", f"{item.path} does not exist")
    data = item.path.read_bytes()
    if not data:
        raise DecodeError("missing_file", f"{item.path} is empty")
    return data, item.path.suffix.lower().lstrip(".")


def _facts(kind: str, info: VideoInfo, start: float | None = None, end: float | None = None) -> dict[str, Any]:
    facts: dict[str, Any] = {"kind": kind, "duration": round(info.duration, 6), "fps": round(info.fps, 6),
                             "width": info.width, "height": info.height, "num_frames": info.num_frames,
                             "codec": info.codec}
    if start is not None:
        facts["start"] = start
    if end is not None:
        facts["end"] = end
    return facts


def prepare_video(data: bytes, ext: str, start: float | None, end: float | None,
                  options: EncodeOptions) -> tuple[bytes, dict[str, Any], str]:
    """(media bytes, json facts, member name). `copy` keeps the bytes after checking a frame decodes."""
    info = probe_video(data)
    if options.codec == "copy":
        decode_indices_pyav(data, [0])  # a header PyAV can read is not proof that frames decode
        facts = _facts("video", info, start, end)
        if start is not None or end is not None:
            facts["duration"] = round(min(end if end is not None else info.duration, info.duration) - (start or 0), 6)
            if facts["duration"] <= 0:
                raise DecodeError("zero_frames", f"trim [{start}, {end}] is outside the {info.duration:.2f} s video")
        return data, facts, ext
    media, encoded = transcode(data, info, start, end, options)
    return media, _facts("video", encoded), ENCODERS[options.codec][1]


def _output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Even width/height (yuv420p needs them), short side scaled down to `short_side` if it is larger."""
    scale = min(1.0, short_side / min(width, height)) if short_side else 1.0
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _open_output(buffer: io.BytesIO, codec: str, rate: Fraction, size: tuple[int, int], options: EncodeOptions):
    import av

    encoder, container_format = ENCODERS[codec]
    container = av.open(buffer, mode="w", format=container_format)
    stream = container.add_stream(encoder, rate=rate)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    if codec == "h264":  # one thread: the builder runs one process per core
        stream.options = {"preset": "veryfast", "crf": str(options.crf or 23), "threads": "1",
                          "x264-params": f"keyint={options.gop}:min-keyint={options.gop}:scenecut=0"}
    else:
        stream.options = {"deadline": "realtime", "cpu-used": "8", "g": str(options.gop),
                          "crf": str(options.crf or 32), "b:v": "0", "threads": "1", "row-mt": "0"}
    return container, stream


def transcode(data: bytes, info: VideoInfo, start: float | None, end: float | None,
              options: EncodeOptions) -> tuple[bytes, VideoInfo]:
    """Decode [start, end], resample to options.fps, resize, encode with a short GOP; returns bytes and facts."""
    import av

    fps = options.fps or info.fps or 25.0
    rate = Fraction(fps).limit_denominator(1001)
    size = _output_size(info.width, info.height, options.short_side)
    buffer, written, next_time = io.BytesIO(), 0, start or 0.0
    try:
        with av.open(io.BytesIO(data)) as source:
            video = source.streams.video[0]
            video.codec_context.thread_count = 1
            if start and video.time_base:  # jump to the keyframe before the trim instead of decoding up to it
                source.seek(int(start / video.time_base), stream=video, backward=True)
            container, stream = _open_output(buffer, options.codec, rate, size, options)
            with container:
                for frame in source.decode(video):
                    time = float(frame.time) if frame.time is not None else written / fps
                    if end is not None and time > end:
                        break
                    if time + 1e-6 < next_time:
                        continue  # before the trim start, or between output frames when lowering the fps
                    next_time += 1.0 / fps
                    out = frame.reformat(width=size[0], height=size[1], format="yuv420p")
                    out.pts, out.time_base = written, 1 / rate
                    container.mux(stream.encode(out))
                    written += 1
                container.mux(stream.encode())
    except av.FFmpegError as err:
        raise DecodeError("undecodable", f"transcode failed: {str(err)[:160]}") from err
    if not written:
        raise DecodeError("zero_frames", f"no frame in [{start}, {end}] of a {info.duration:.2f} s video")
    return buffer.getvalue(), VideoInfo(options.codec, written, float(rate), written / float(rate), *size)


def prepare_image(data: bytes, options: EncodeOptions) -> tuple[bytes, dict[str, Any]]:
    """JPEG bytes (kept as they are when already JPEG and not resized) and the json facts of an image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
            size = _output_size(width, height, options.short_side) if options.short_side else (width, height)
            if image.format == "JPEG" and size == (width, height) and image.mode in ("RGB", "L"):
                media = data
            else:
                out = io.BytesIO()
                image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(out, "JPEG",
                                                                                 quality=options.jpeg_quality)
                media, (width, height) = out.getvalue(), size
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DecodeError("undecodable", f"image: {str(err)[:160]}") from err
    return media, {"kind": "image", "duration": 0.0, "fps": 0.0, "width": width, "height": height,
                   "num_frames": 1, "codec": "jpeg"}
