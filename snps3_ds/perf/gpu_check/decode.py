"""DALI against the CPU decoders on the check's shards: the same frames within a stated tolerance, and clips/s.

Equivalence goes through the evaluation loaders (centre frames, short-side resize, centre crop, normalise), so
it checks what training and evaluation consume, not a decoder in isolation; the difference is measured in
pixel units (0..255) after undoing the normalisation.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch

from snps3_ds.config import DataConfig, MaskingConfig
from snps3_ds.data.decode.transforms import IMAGENET_STD
from snps3_ds.data.loader import StreamPlacement, build_eval_loader, build_train_loader

MAX_MEAN_ABS_DIFF = 2.0  # pixel units of 255; DALI-CPU vs decord measured 0.05-1.2 on real VP9/VP8/MJPEG clips


class CheckFailed(RuntimeError):
    """An item ran and its result is wrong (the message says what was expected)."""


def _frames(shards: list[str], decoder: str, tokenizer: Any, size: int, clips: int) -> dict[str, torch.Tensor]:
    """Every sample's evaluation frames [T, 3, S, S] (float, on the CPU), by key."""
    data = DataConfig(eval_shards=shards, decoder=decoder, num_clips=clips, image_size=size, num_workers=2,
                      max_text_len=16)
    frames = {}
    for batch in build_eval_loader(data, tokenizer, 8, clips):
        frames.update(zip(batch.keys, batch.frames.float().cpu()))
    return frames


def equivalence(shards: list[str], tokenizer: Any, size: int = 224, clips: int = 4,
                against: tuple[str, ...] = ("pyav", "decord")) -> dict[str, Any]:
    """DALI's frames against each CPU decoder's on every sample of `shards`; CheckFailed past the tolerance."""
    dali = _frames(shards, "dali", tokenizer, size, clips)
    keys = sorted(dali)
    to_pixels = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255
    figures: dict[str, Any] = {"samples": len(keys), "frames": len(keys) * clips, "size": size,
                               "tolerance_mean_abs_diff": MAX_MEAN_ABS_DIFF}
    for decoder in against:
        other = _frames(shards, decoder, tokenizer, size, clips)
        if sorted(other) != keys:
            raise CheckFailed(f"DALI and {decoder} read different samples: {sorted(set(keys) ^ set(other))[:5]}")
        diff = (torch.stack([dali[k] for k in keys]) - torch.stack([other[k] for k in keys])).abs() * to_pixels
        sample = diff.flatten()[::max(1, diff.numel() // 1_000_000)]
        figures[f"mean_abs_diff_vs_{decoder}"] = float(diff.mean())
        figures[f"p99_abs_diff_vs_{decoder}"] = float(torch.quantile(sample, 0.99))
        figures[f"max_abs_diff_vs_{decoder}"] = float(diff.max())
    worst = max(figures[f"mean_abs_diff_vs_{d}"] for d in against)
    if worst > MAX_MEAN_ABS_DIFF:
        raise CheckFailed(f"DALI's frames differ from the CPU decoders' by {worst:.2f} of 255 on average "
                          f"(tolerance {MAX_MEAN_ABS_DIFF}): {figures}")
    return figures


def _timed(step, seconds: float, warmup: int) -> tuple[int, float]:
    """(clips, seconds) of calling step() (which returns clips) for about `seconds` after `warmup` calls."""
    for _ in range(warmup):
        step()
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        clips += step()
    return clips, time.perf_counter() - start


def dali_pipelines(prefix: Path, count: int, seconds: float, threads: int, batch: int = 16) -> float:
    """Clips/s of `count` DALI training pipelines (each a 1/count shard of the data, `threads` CPU threads)
    run side by side from Python threads: decode, sample, resize, crop, normalise; no Python collation."""
    from snps3_ds.data.dali.pipeline import PipelineSpec, build_pipeline
    from snps3_ds.data.dali.shards import checked_shards

    paths, indexes, _ = checked_shards(_urls(prefix))
    data = DataConfig(num_clips=4, image_size=224, num_workers=threads, shuffle_buffer=64)
    pipes = [build_pipeline(PipelineSpec(paths, indexes, True, 4, batch, seed=i, shard_id=i, num_shards=count), data)
             for i in range(count)]
    done = [0] * count

    def loop(i: int, until: float) -> None:
        while time.perf_counter() < until:
            done[i] += len(pipes[i].run()[1])

    for pipe in pipes:
        pipe.run()  # warm-up: first batches build the decoders
    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i, start + seconds)) for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.perf_counter() - start)


def loader_rate(prefix: Path, decoder: str, tokenizer: Any, workers: int, seconds: float) -> float:
    """Clips/s of the training loader (batches of 16 x 4 clips at 224 px) as the trainer sees it."""
    data = DataConfig(train_shards=[str(prefix)], decoder=decoder, num_clips=4, image_size=224, num_workers=workers,
                      shuffle_buffer=64)
    batches = build_train_loader(data, MaskingConfig(), tokenizer, 16, StreamPlacement(0, 1, 0))
    try:
        clips, elapsed = _timed(lambda: next(batches).num_videos, seconds, warmup=3)
    finally:
        batches.close()  # stops its workers now, not at interpreter exit
    return clips / elapsed


def throughput(prefix: Path, tokenizer: Any, cores: int, seconds: float = 4.0) -> dict[str, Any]:
    """DALI with 1, 2 and 4 pipelines (and the DALI training loader) against PyAV and decord on all cores."""
    threads = max(1, cores // 4)
    figures: dict[str, Any] = {"cpu_cores": cores, "dali_threads_per_pipeline": threads, "seconds_each": seconds}
    for count in (1, 2, 4):
        figures[f"dali_{count}_pipelines_clips_per_s"] = dali_pipelines(prefix, count, seconds, threads)
    figures["dali_loader_clips_per_s"] = loader_rate(prefix, "dali", tokenizer, threads, seconds)
    for decoder in ("pyav", "decord"):
        figures[f"{decoder}_loader_{cores}_workers_clips_per_s"] = loader_rate(prefix, decoder, tokenizer, cores,
                                                                              seconds)
    best_cpu = max(figures[f"{d}_loader_{cores}_workers_clips_per_s"] for d in ("pyav", "decord"))
    figures["best_dali_over_best_cpu"] = max(figures[f"dali_{c}_pipelines_clips_per_s"] for c in (1, 2, 4)) / best_cpu
    return figures


def _urls(prefix: Path) -> list[str]:
    from snps3_ds.data.stream.shards import resolve_shards

    return resolve_shards([str(prefix)])
