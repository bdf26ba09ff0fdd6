"""DALI backend: `fn.readers.webdataset` over tar + idx, `fn.decoders.video` on the `mixed` device (NVDEC)
or the CPU, and frame sampling, resize, crop, flip and normalise inside the pipeline (DESIGN §3.2).

DALI stops a whole pipeline on one sample it cannot decode, and its CPU decoder reads only VP8/VP9/MJPEG.
So a small Python stage (`FramePlanner`) probes every sample first (PyAV demux: codec and frame count,
never pixels) and routes it with DALI conditionals: DALI video, DALI image, or `fallback`, where the
sample's bytes come back to Python and the decord/PyAV chain decodes it. Both routes end as the same
DecodedSample (snps3_ds.data.dali.batches), and the loader's Collator makes the same VideoTextBatch as on
the decord path.

Nothing here imports DALI at module import time: the library stays importable without it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
import torch

from snps3_ds.config import DataConfig
from snps3_ds.data.decode.backends import segment_indices, trim_range
from snps3_ds.data.samples import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from snps3_ds.data.decode.pyav import probe_video
from snps3_ds.data.decode.transforms import IMAGENET_MEAN, IMAGENET_STD

CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
GPU_CODECS = CPU_CODECS | {"h264", "hevc", "av1", "mpeg4"}
ROUTE_VIDEO, ROUTE_IMAGE, ROUTE_FALLBACK = 0, 1, 2
MEDIA_EXT = ";".join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def split_source_info(info: str) -> tuple[str, str, str]:
    """(tar path, key, extension) from DALI's webdataset source_info `path.tar:offset:key.ext`."""
    path, _, name = info.rsplit(":", 2)
    key, _, ext = name.partition(".")
    return path, key, ext.lower()


class FramePlanner:
    """Per-sample DALI python_function: (media, json, source_info) -> (frame indices [T], route).

    Never raises: anything it cannot vouch for goes to the fallback route, so DALI's decoders only ever
    see streams PyAV could open and whose codec the chosen device decodes.
    """

    def __init__(self, num_clips: int, train: bool, codecs: frozenset[str], seed: int) -> None:
        self.num_clips, self.train, self.codecs = num_clips, train, codecs
        self.rng = random.Random(seed)

    def __call__(self, media: np.ndarray, meta: np.ndarray, info: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nothing = np.zeros(self.num_clips, dtype=np.int32)
        try:
            _, _, ext = split_source_info(info.tobytes().decode("utf-8", "replace"))
            if ext in IMAGE_EXTENSIONS and media.size:
                return nothing, np.array(ROUTE_IMAGE, dtype=np.int32)
            if ext not in VIDEO_EXTENSIONS:
                return nothing, np.array(ROUTE_FALLBACK, dtype=np.int32)
            video = probe_video(media.tobytes())
            if video.codec not in self.codecs:
                return nothing, np.array(ROUTE_FALLBACK, dtype=np.int32)
            start, end = _trim(meta)
            first, last = trim_range(start, end, video.fps)
            picks = segment_indices(video.num_frames, self.num_clips, self.train, self.rng, first, last)
            return np.asarray(picks, dtype=np.int32), np.array(ROUTE_VIDEO, dtype=np.int32)
        except Exception:  # noqa: BLE001 - the fallback route re-decodes and reports the reason
            return nothing, np.array(ROUTE_FALLBACK, dtype=np.int32)


def _trim(meta: np.ndarray) -> tuple[float | None, float | None]:
    try:
        parsed = json.loads(meta.tobytes()) if meta.size else {}
    except ValueError:
        return None, None
    bounds = [parsed.get(k) if isinstance(parsed, dict) else None for k in ("start", "end")]
    return tuple(b if isinstance(b, (int, float)) and not isinstance(b, bool) else None for b in bounds)


@dataclass(frozen=True)
class GraphSpec:
    """What one rank's pipeline reads and how it augments (the arguments of the pipeline body)."""

    paths: list[str]
    index_paths: list[str]
    planner: FramePlanner
    gpu: bool
    train: bool
    size: int
    scale: tuple[float, float]
    hflip: bool
    shard_id: int
    num_shards: int
    shuffle_buffer: int
    reader_seed: int
    epoch_seed: int


def _graph(spec: GraphSpec):
    """The pipeline body: read, plan, decode by route, then one augmentation for every route."""
    from nvidia.dali import fn, types

    order = {"random_shuffle": True, "initial_fill": max(1, spec.shuffle_buffer), "shuffle_after_epoch": True,
             "shuffle_after_epoch_seed": spec.epoch_seed} if spec.train else {"pad_last_batch": True}
    media, meta, txt = fn.readers.webdataset(
        paths=spec.paths, index_paths=spec.index_paths, ext=[MEDIA_EXT, "json", "txt"],
        missing_component_behavior="empty", shard_id=spec.shard_id, num_shards=spec.num_shards,
        seed=spec.reader_seed, name="reader", **order)
    info = fn.get_property(media, key="source_info")
    indices, route = fn.python_function(media, meta, info, function=spec.planner, num_outputs=2)
    device = "mixed" if spec.gpu else "cpu"
    size = spec.size
    if route == ROUTE_VIDEO:
        frames = fn.decoders.video(media, device=device, frames=indices)
    elif route == ROUTE_IMAGE:
        frames = fn.expand_dims(fn.decoders.image(media, device=device, output_type=types.RGB), axes=[0],
                                new_axis_names="F")
    else:
        frames = fn.constant(idata=0, shape=[1, size, size, 3], dtype=types.UINT8, layout="FHWC")
        frames = frames.gpu() if spec.gpu else frames
    frames = _augment(frames, train=spec.train, size=size, scale=spec.scale, hflip=spec.hflip)
    meta_info = fn.get_property(meta, key="source_info")  # names the sample when its media is missing
    return frames, route, meta, txt, info, meta_info, media


def _augment(frames, *, train: bool, size: int, scale: tuple[float, float], hflip: bool):
    """Short-side resize (random scale in training), crop (random or centre), flip, ImageNet normalise:
    the same rule as transforms.FrameTransform, one crop per clip."""
    from nvidia.dali import fn, types

    if train:
        short = fn.random.uniform(range=[size * scale[0], size * scale[1] + 1e-3])
        crop_x, crop_y = fn.random.uniform(range=[0.0, 1.0]), fn.random.uniform(range=[0.0, 1.0])
        mirror = fn.random.coin_flip(probability=0.5) if hflip else 0
    else:
        short, crop_x, crop_y, mirror = float(size), 0.5, 0.5, 0
    frames = fn.resize(frames, resize_shorter=short, antialias=True)
    return fn.crop_mirror_normalize(
        frames, crop=(size, size), crop_pos_x=crop_x, crop_pos_y=crop_y, mirror=mirror, dtype=types.FLOAT,
        output_layout="FCHW", mean=[255 * m for m in IMAGENET_MEAN], std=[255 * s for s in IMAGENET_STD])


@dataclass(frozen=True)
class PipelineSpec:
    """One rank's DALI pipeline: its tars + indexes, train or eval, clips, batch, and where it sits.

    `seed` drives this rank's shuffle buffer, crops and frame positions; `epoch_seed` (the same on every rank)
    orders the tars each epoch, so the ranks' slices of an epoch stay disjoint.
    """

    urls: list[str]
    index_paths: list[str]
    train: bool
    num_clips: int
    batch_size: int
    seed: int
    shard_id: int
    num_shards: int
    epoch_seed: int = 0


def build_pipeline(spec: PipelineSpec, data: DataConfig):
    """A built DALI pipeline over the spec's tars for one rank: mixed device when CUDA is there, CPU otherwise.

    Outputs per sample: frames [t, 3, S, S] float, route, json bytes, txt bytes, source_info of the media and
    of the json (`path.tar:offset:key.ext`, empty when that member is missing), media bytes.
    """
    from nvidia.dali import pipeline_def

    gpu = torch.cuda.is_available()
    seed = spec.seed % (1 << 31)
    planner = FramePlanner(spec.num_clips, spec.train, GPU_CODECS if gpu else CPU_CODECS, seed)
    graph = GraphSpec(spec.urls, spec.index_paths, planner, gpu, spec.train, data.image_size, data.train_scale,
                      data.hflip, spec.shard_id, spec.num_shards, data.shuffle_buffer, seed,
                      spec.epoch_seed % (1 << 31))
    pipe = pipeline_def(_graph, enable_conditionals=True)(
        graph, batch_size=spec.batch_size, num_threads=max(1, data.num_workers), seed=seed,
        device_id=torch.cuda.current_device() if gpu else None, exec_dynamic=True)
    try:
        pipe.build()
    except RuntimeError as err:
        raise RuntimeError(f"the DALI pipeline ({'mixed/GPU' if gpu else 'CPU'}) could not be built: {str(err)[:400]}; "
                           f"set data.decoder=decord to decode on the CPU instead") from err
    return pipe
