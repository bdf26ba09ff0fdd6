"""Build a small synthetic video-text corpus as WebDataset shards (DESIGN §3.1).

Each clip shows one or two coloured shapes moving on a plain background; its
captions name the colours, shapes, sizes, motions and (sometimes) the
background, so a tiny model can learn real video-text alignment in minutes and
the stored `attributes` can later be turned into QA tasks.

    python data_prep/make_demo_corpus.py --out data/demo --train 2000 --test 200 --val 200

Output is deterministic for a seed: every clip draws from its own RNG derived
from (seed, split, index), and samples are written in index order whatever the
number of worker processes.

Downstream tasks (retrieval, QA, multi-choice; data_prep/demo_tasks.py,
`make_demo_tasks`) go to OUT/tasks/: `--tasks` builds the corpus and then the
tasks; `--tasks-only` writes just the tasks for the corpus already in --out
(about a second: facts and captions are read from the shard json members, no
clip is rendered, the shards are not touched). `--seed` also seeds the task
draws (question order is fixed; distractor captions and option order vary).

    python data_prep/make_demo_corpus.py --out data/demo --tasks-only
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np
from tqdm import tqdm

from snps3_ds.sharding.writer import ShardWriter

log = logging.getLogger("make_demo_corpus")

# --- the visual vocabulary ---------------------------------------------------
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (40, 90, 240),
    "yellow": (245, 220, 30),
    "purple": (160, 50, 210),
    "orange": (255, 140, 0),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "grey": (110, 110, 110),
    "white": (255, 255, 255),
    "dark blue": (15, 25, 90),
}
# Colours too close to a background to be seen clearly on it (always including itself).
_LOW_CONTRAST = {"white": {"white", "yellow"}, "dark blue": {"blue", "purple"}}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.13, "large": 0.24}  # shape radius as a fraction of the short side
MOTIONS = ("left", "right", "up", "down", "circle", "still")
FRAME_SIDES = (64, 80, 96)
TWO_SHAPE_PROB = 0.25
CODECS = {"h264": ("libx264", "mp4"), "vp9": ("libvpx-vp9", "webm")}
SPLITS = {"train": 0, "test": 1, "val": 2}  # split id seeds a separate RNG stream per split
# val: clips neither the pre-training nor a fine-tune trains on, for choices made after training (the joint
# re-ranking weight, evaluation/joint_weight.py) without looking at the test split.

# --- caption vocabulary ------------------------------------------------------
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moves to the left", "moves left", "slides left", "drifts to the left",
             "travels leftward", "glides to the left"),
    "right": ("moves to the right", "moves right", "slides right", "drifts right",
              "travels rightward", "glides to the right"),
    "up": ("moves up", "slides upward", "rises", "floats upward", "drifts up",
           "travels toward the top"),
    "down": ("moves down", "falls", "slides downward", "drops", "sinks",
             "travels toward the bottom"),
    "circle": ("moves in a circle", "circles around", "travels in a loop",
               "goes round in a circle", "loops around", "follows a circular path"),
    "still": ("stays still", "does not move", "remains in place", "stays in one spot",
              "sits still", "stays motionless"),
}
BG_PHRASES = ("on a {bg} background", "over a {bg} background", "against a {bg} background",
              "in front of a {bg} background")
ONE_SHAPE_TEMPLATES = ("{np} {vp}", "{np} {vp} {bgp}", "{bgp} {np} {vp}",
                       "there is {np} that {vp}", "a video of {np} that {vp}",
                       "the clip shows {np} that {vp}")
TWO_SHAPE_TEMPLATES = ("{np1} {vp1} while {np2} {vp2}", "{np1} {vp1} and {np2} {vp2}",
                       "{bgp} {np1} {vp1} while {np2} {vp2}",
                       "two shapes: {np1} {vp1} and {np2} {vp2}",
                       "{np1} {vp1} {bgp}, while {np2} {vp2}")
MAX_CAPTIONS_PER_CLIP = 10


@dataclass(frozen=True)
class ClipConfig:
    """What every clip shares: codec, timing and caption count."""

    codec: str = "h264"
    frames: int = 16
    fps: float = 8.0
    captions_per_clip: int = 2
    sides: tuple[int, ...] = FRAME_SIDES
    """Frame widths and heights drawn from (even pixels); 64-96 keeps the CPU demo fast, 224-256 gives clips of
    the size real pre-training decodes (the GPU check)."""


@dataclass(frozen=True)
class ShapeSpec:
    """One shape in a clip; these fields are stored as the sample's `attributes`."""

    color: str
    shape: str
    size: str
    motion: str


# --- scene sampling ------------------------------------------------------------
def visible_colors(background: str) -> list[str]:
    """Shape colours that stand out on `background`, in COLORS order."""
    return [c for c in COLORS if c not in _LOW_CONTRAST.get(background, {background})]


def sample_scene(rng: np.random.Generator,
                 sides: tuple[int, ...] = FRAME_SIDES) -> tuple[str, list[ShapeSpec], int, int]:
    """Draw background, frame size and 1-2 shapes (distinct colours that stand out on it)."""
    background = str(rng.choice(list(BACKGROUNDS)))
    allowed = visible_colors(background)
    n_shapes = 2 if rng.random() < TWO_SHAPE_PROB else 1
    colors = rng.choice(allowed, size=n_shapes, replace=False)
    shapes = [
        ShapeSpec(str(c), str(rng.choice(SHAPES)), str(rng.choice(list(SIZES))),
                  str(rng.choice(MOTIONS)))
        for c in colors
    ]
    width, height = (int(rng.choice(sides)) for _ in range(2))
    return background, shapes, width, height


def trajectory(rng: np.random.Generator, motion: str, radius: float, width: int,
               height: int, frames: int) -> np.ndarray:
    """Centre positions (frames, 2) as (x, y) for a motion, keeping the shape inside the frame."""
    t = np.linspace(0.0, 1.0, frames)
    lo_x, hi_x, lo_y, hi_y = radius, width - radius, radius, height - radius
    x0, y0 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
    if motion in ("left", "right"):
        start, end = (hi_x, lo_x) if motion == "left" else (lo_x, hi_x)
        xs, ys = start + (end - start) * t, np.full(frames, y0)
    elif motion in ("up", "down"):
        start, end = (hi_y, lo_y) if motion == "up" else (lo_y, hi_y)
        xs, ys = np.full(frames, x0), start + (end - start) * t
    elif motion == "circle":
        r = 0.8 * min(hi_x - width / 2, hi_y - height / 2)
        phase, turn = rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0])
        angle = phase + turn * 2 * np.pi * t
        xs, ys = width / 2 + r * np.cos(angle), height / 2 + r * np.sin(angle)
    elif motion == "still":
        xs, ys = np.full(frames, x0), np.full(frames, y0)
    else:
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
    return np.stack([xs, ys], axis=1)


def shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float,
               r: float) -> np.ndarray:
    """Boolean mask of a shape of 'radius' r centred at (cx, cy); sizes chosen to look alike."""
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":  # apex up, base at +0.8r; half-width grows linearly from the apex
        depth = (dy + r) / (1.8 * r)
        return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= depth * 1.05 * r)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _shape_masks(rng: np.random.Generator, spec: ShapeSpec, width: int, height: int,
                 frames: int) -> np.ndarray:
    """Boolean masks (T, H, W) of one shape along a freshly drawn trajectory."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    radius = SIZES[spec.size] * min(width, height)
    # 1.15: the diamond reaches furthest from its centre; keep every shape fully in frame.
    path = trajectory(rng, spec.motion, 1.15 * radius, width, height, frames)
    return np.stack([shape_mask(spec.shape, xx, yy, cx, cy, radius) for cx, cy in path])


def _mostly_visible(masks: list[np.ndarray], min_visible: float = 0.5) -> bool:
    """True if every shape keeps `min_visible` of its area in every frame after occlusion."""
    for i, mask in enumerate(masks):
        covered = np.zeros_like(mask)
        for later in masks[i + 1:]:
            covered |= later
        visible = (mask & ~covered).sum(axis=(1, 2))
        if np.any(visible < min_visible * mask.sum(axis=(1, 2))):
            return False
    return True


def render_clip(rng: np.random.Generator, background: str, shapes: list[ShapeSpec],
                width: int, height: int, frames: int, max_tries: int = 20) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 RGB.

    Large shapes are drawn first, and trajectories are redrawn while one shape
    hides most of another, so each captioned shape stays visible.
    """
    order = sorted(shapes, key=lambda s: -SIZES[s.size])
    for _ in range(max_tries):
        masks = [_shape_masks(rng, spec, width, height, frames) for spec in order]
        if _mostly_visible(masks):
            break
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    video[:] = BACKGROUNDS[background]
    for spec, mask in zip(order, masks):
        video[mask] = COLORS[spec.color]
    return video


# --- captions --------------------------------------------------------------------
def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(rng: np.random.Generator, spec: ShapeSpec) -> str:
    """'a small red circle' / 'an orange square' (size is sometimes left out)."""
    words = ([spec.size] if rng.random() < 0.7 else []) + [spec.color, spec.shape]
    return _with_article(" ".join(words))


def one_caption(rng: np.random.Generator, background: str, shapes: list[ShapeSpec]) -> str:
    """One caption naming every shape. Its template and phrase choices depend only on the RNG state
    and the number of shapes, so one seed phrases different scenes alike (demo MC options)."""
    bgp = str(rng.choice(BG_PHRASES)).format(bg=background)
    fields = {"bgp": bgp}
    for i, spec in enumerate(shapes, start=1):
        suffix = "" if len(shapes) == 1 else str(i)
        fields["np" + suffix] = _noun_phrase(rng, spec)
        fields["vp" + suffix] = str(rng.choice(MOTION_PHRASES[spec.motion]))
    templates = ONE_SHAPE_TEMPLATES if len(shapes) == 1 else TWO_SHAPE_TEMPLATES
    return str(rng.choice(templates)).format(**fields)


def make_captions(rng: np.random.Generator, background: str, shapes: list[ShapeSpec],
                  n: int) -> list[str]:
    """`n` different captions for one clip, each naming every shape's colour, shape and motion."""
    captions: list[str] = []
    for _ in range(200 * n):
        caption = one_caption(rng, background, shapes)
        if caption not in captions:
            captions.append(caption)
            if len(captions) == n:
                return captions
    raise RuntimeError(f"could only make {len(captions)} distinct captions, wanted {n}")


# --- encoding ----------------------------------------------------------------------
def encode_video(video: np.ndarray, fps: float, codec: str) -> bytes:
    """Encode (T, H, W, 3) uint8 RGB (even H, W) in memory: H.264/mp4 or VP9/webm, GOP 8.

    The short GOP keeps seeking to a sampled frame cheap for the loaders. For
    byte-identical output per seed: one encoder thread, bitexact muxing, and
    x264's mbtree off (with it on, x264 output varied between identical runs on
    these tiny frames, apparently from an uninitialised read in its SIMD code).
    """
    encoder, container_format = CODECS[codec]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_format,
                 options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.thread_count = 1
        if codec == "h264":
            stream.options = {"preset": "veryfast", "crf": "20", "threads": "1",
                              "x264-params": "keyint=8:min-keyint=8:scenecut=0:mbtree=0"}
        else:
            stream.options = {"deadline": "realtime", "cpu-used": "8", "g": "8", "crf": "32",
                              "b:v": "0", "threads": "1", "row-mt": "0"}
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent RNG per clip, so output is the same for any worker count or order."""
    return np.random.default_rng([seed, SPLITS[split], index])


def make_sample(seed: int, split: str, index: int, cfg: ClipConfig) -> dict[str, Any]:
    """Render, caption and encode one clip; returns ShardWriter.write keyword arguments."""
    key = f"{split}_{index:06d}"
    rng = clip_rng(seed, split, index)
    background, shapes, width, height = sample_scene(rng, cfg.sides)
    video = render_clip(rng, background, shapes, width, height, cfg.frames)
    duration = cfg.frames / cfg.fps
    meta = {
        "captions": make_captions(rng, background, shapes, cfg.captions_per_clip),
        "source": "demo", "kind": "video", "duration": duration, "fps": cfg.fps,
        "width": width, "height": height, "num_frames": cfg.frames, "codec": cfg.codec,
        "attributes": {"background": background, "shapes": [asdict(s) for s in shapes]},
    }
    media_ext = CODECS[cfg.codec][1]
    members = {media_ext: encode_video(video, cfg.fps, cfg.codec),
               "json": json.dumps(meta).encode("utf-8")}
    return {"key": key, "members": members, "codec": cfg.codec, "duration": duration}


def _make_sample_safe(job: tuple[int, str, int, ClipConfig]) -> dict[str, Any]:
    """Worker entry point: a failure becomes a record instead of killing the pool."""
    seed, split, index, cfg = job
    try:
        return make_sample(seed, split, index, cfg)
    except Exception as exc:  # reported in shards.json "failures"
        return {"key": f"{split}_{index:06d}", "error": f"{type(exc).__name__}: {exc}"}


@dataclass(frozen=True)
class ShardLayout:
    """How the clips go into tars: clips per shard, and the command recorded in each manifest."""

    size: int = 500
    command: str | None = None


# --- driver ------------------------------------------------------------------------
def _samples(pool: Any, seed: int, split: str, count: int,
             cfg: ClipConfig) -> Iterator[dict[str, Any]]:
    """Samples of one split in index order, made in the pool (or inline when pool is None)."""
    jobs = ((seed, split, i, cfg) for i in range(count))
    if pool is None:
        return map(_make_sample_safe, jobs)
    return pool.imap(_make_sample_safe, jobs, chunksize=8)


def _write_split(out: Path, split: str, count: int, seed: int, cfg: ClipConfig,
                 shards: ShardLayout, pool: Any) -> dict[str, Any]:
    """Stream one split into `out/<split>-%06d.tar` shards; returns its manifest."""
    with ShardWriter(out / split, max_samples=shards.size, command=shards.command) as writer:
        for sample in tqdm(_samples(pool, seed, split, count, cfg), total=count,
                           desc=split, unit="clip"):
            if "error" in sample:
                writer.add_failure(sample["key"], sample["error"])
            else:
                writer.write(**sample)
    manifest = writer.manifest()
    for failure in manifest["failures"]:
        log.warning("%s: skipped %s: %s", split, failure["key"], failure["reason"])
    return manifest


def _check_args(counts: dict[str, int], seed: int, cfg: ClipConfig, workers: int, shard_size: int) -> None:
    """Fail early, naming the bad option and what is expected."""
    problems = []
    if seed < 0:
        problems.append(f"--seed must be >= 0 (got {seed})")
    if any(n < 0 for n in counts.values()):
        problems.append("--train/--test/--val must be >= 0 (got "
                        + ", ".join(f"{name} {n}" for name, n in counts.items()) + ")")
    elif sum(counts.values()) == 0:
        problems.append("--train, --test and --val are all 0: nothing to make")
    if cfg.codec not in CODECS:
        problems.append(f"--codec must be one of {sorted(CODECS)} (got {cfg.codec!r})")
    if not cfg.sides or any(side < 16 or side % 2 for side in cfg.sides):
        problems.append(f"--sides must be even pixel sizes >= 16 (got {list(cfg.sides)})")
    if cfg.frames < 1:
        problems.append(f"--frames must be >= 1 (got {cfg.frames})")
    if not cfg.fps > 0:
        problems.append(f"--fps must be > 0 (got {cfg.fps})")
    if not 1 <= cfg.captions_per_clip <= MAX_CAPTIONS_PER_CLIP:
        problems.append(f"--captions-per-clip must be in 1..{MAX_CAPTIONS_PER_CLIP} "
                        f"(got {cfg.captions_per_clip})")
    if workers < 1:
        problems.append(f"--workers must be >= 1 (got {workers})")
    if shard_size < 1:
        problems.append(f"--shard-size must be >= 1 (got {shard_size})")
    if problems:
        raise ValueError("make_demo_corpus: " + "; ".join(problems))


def make_demo_corpus(out: str | Path, train: int, test: int, seed: int = 0, clips: ClipConfig = ClipConfig(),
                     workers: int | None = None, shards: ShardLayout = ShardLayout(), val: int = 0) -> dict[str, Any]:
    """Write the train, test and val splits under `out`; returns a summary with per-split manifests.

    `clips` sets codec, frames, fps and captions per clip. A split with 0 clips is not written (and one
    already there is left alone), so a val split can be added to an existing corpus: each split draws from
    its own RNG streams, and train and test come out the same with or without it.
    `workers=None` uses every CPU; 1 runs inline.
    """
    cfg = clips
    workers = (os.cpu_count() or 1) if workers is None else workers
    counts = {"train": train, "test": test, "val": val}
    _check_args(counts, seed, cfg, workers, shards.size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # fork: workers inherit the imports, and the worker function need not be importable by name.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        splits = {name: _write_split(out, name, n, seed, cfg, shards, pool)
                  for name, n in counts.items() if n > 0}
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return {"out": str(out), "seed": seed, "codec": cfg.codec, "workers": workers,
            "elapsed_s": round(time.perf_counter() - start, 3),
            "splits": {name: {"manifest": str(out / f"{name}.shards.json"),
                              "num_samples": m["num_samples"], "num_shards": len(m["shards"]),
                              "failures": len(m["failures"])}
                       for name, m in splits.items()}}
