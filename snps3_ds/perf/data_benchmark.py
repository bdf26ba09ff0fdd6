"""The loader benchmark: clips/s of the training loader against plain decoding and per-file reads.

`python launch/benchmark.py data --shards OUT_PREFIX ...` measures the training loader (decode, sample,
resize/crop/normalise, tokenise, mask, collate) and two baselines on the same cores and the same samples:
  limit:      a plain sequential PyAV decode of the same frames (centre of each segment): each clip decoded
              from its start up to its last sampled frame, one single-threaded process per worker, nothing
              else (no transforms, no text, no batching): what decoding alone costs on these cores;
  limit_seek: the same with a seek to the keyframe before each sampled frame (the tighter bound on
              short-GOP shards);
  reference:  the reference implementation's approach, one media file per sample read from a folder by a
              map-style Dataset (decord from the path), with the same transforms and collation.
and prints the ratios loader/limit, loader/limit_seek and loader/reference, in wall-clock clips/s and in clips
per CPU-second of every process involved (the loader's workers and training process, the limit's processes).
The CPU figure is the one to trust on a machine that other jobs share: wall-clock rates move with their load,
CPU-seconds per clip hardly do. It also compares the per-sample CPU backends (PyAV and decord seeking the
same frames on one core, with their failures), which is what `data.decoder: auto` chooses by on a CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch
import webdataset as wds
from torch.utils.data import DataLoader, Dataset

from snps3_ds.config import DataConfig, MaskingConfig, ModelConfig
from snps3_ds.data.collate import Collator
from snps3_ds.data.decode.backends import DecodeError, DecordDecoder, PyAVDecoder, segment_indices
from snps3_ds.data.decode.pyav import decode_indices_pyav, decode_indices_seeking, probe_video
from snps3_ds.data.decode.sample import DecodedSample
from snps3_ds.data.decode.transforms import FrameTransform
from snps3_ds.data.loader import StreamPlacement, build_train_loader
from snps3_ds.data.samples import IMAGE_EXTENSIONS, media_member, sample_meta
from snps3_ds.data.seeds import WorkerRandom
from snps3_ds.data.stream.shards import resolve_shards
from snps3_ds.models.factory import build_tokenizer


def _rate(clips: int, seconds: float, num_clips: int, cpu_s: float | None = None) -> dict[str, float]:
    rate = {"clips_per_s": clips / seconds, "frames_per_s": clips * num_clips / seconds, "seconds": seconds}
    if cpu_s is not None:
        rate.update(cpu_s=cpu_s, clips_per_cpu_s=clips / max(cpu_s, 1e-9))
    return rate


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def bench_loader(args: argparse.Namespace, tokenizer: Any) -> dict[str, float]:
    """The training loader as the trainer sees it; the first batches (worker start-up) are not timed. CPU time
    counts this process and its DataLoader workers."""
    data = DataConfig(train_shards=[args.shards], decoder=args.decoder, num_clips=args.num_clips,
                      image_size=args.image_size, num_workers=args.workers)
    batches = build_train_loader(data, MaskingConfig(), tokenizer, args.batch_size, StreamPlacement(0, 1, 0))
    for _ in range(args.warmup):
        next(batches)
    pids = [os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))]
    cpu, start = _cpu_seconds(pids), time.perf_counter()
    clips = sum(next(batches).num_videos for _ in range(args.batches))
    seconds, cpu = time.perf_counter() - start, _cpu_seconds(pids) - cpu
    del batches  # stop the workers before the baselines run
    return _rate(clips, seconds, args.num_clips, cpu)


def _media(urls: list[str]) -> list[tuple[str, str, bytes, list[str]]]:
    """(key, ext, bytes, captions) of every good sample in the shards."""
    found = []
    for raw in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        try:
            meta, (ext, data) = sample_meta(raw), media_member(raw)
        except Exception:  # noqa: BLE001 - the benchmark uses only good samples
            continue
        found.append((raw["__key__"], ext, data, meta["captions"]))
    return found


def _pyav_worker(job: tuple[list[bytes], int, int, bool]) -> int:
    """Decode num_clips centre-of-segment frames of each clip with PyAV; returns clips done."""
    clips, num_clips, rounds, seek = job
    decode = decode_indices_seeking if seek else decode_indices_pyav
    done = 0
    for _ in range(rounds):
        for data in clips:
            decode(data, segment_indices(probe_video(data).num_frames, num_clips, False, random.Random(0)))
            done += 1
    return done


def bench_limit(media: list[bytes], args: argparse.Namespace, clips_wanted: int, seek: bool) -> dict[str, float]:
    """The plain-decode limit: `workers` processes each decoding its share of the clips with PyAV."""
    rounds = max(1, -(-clips_wanted // len(media)))
    shares = [(media[i::args.workers], args.num_clips, rounds, seek) for i in range(args.workers)]
    with mp.get_context("fork").Pool(args.workers) as pool:
        pool.map(_pyav_worker, [(m[:1], n, 1, seek) for m, n, _, _ in shares])  # warm the processes
        pids = [child.pid for child in psutil.Process().children()]  # the pool's (the loader's workers are gone)
        cpu, start = _cpu_seconds(pids), time.perf_counter()
        clips = sum(pool.map(_pyav_worker, shares))
        seconds, cpu = time.perf_counter() - start, _cpu_seconds(pids) - cpu
    return _rate(clips, seconds, args.num_clips, cpu)


def bench_backends(media: list[tuple[str, str, bytes, list[str]]], args: argparse.Namespace) -> dict[str, Any]:
    """Each per-sample CPU backend seeking the same num_clips centre frames of every clip, in this one process
    (one core): clips/s and the clips it could not decode. What `data.decoder: auto` ranks them by."""
    videos = [(key, ext, data) for key, ext, data, _ in media if ext not in IMAGE_EXTENSIONS]
    rounds = max(1, -(-args.batch_size * 4 // len(videos)))
    found = {}
    for backend in (PyAVDecoder(), DecordDecoder()):
        failed: set[str] = set()
        done, start = 0, time.process_time()
        for _ in range(rounds):
            for key, ext, data in videos:
                try:
                    backend.decode(data, ext, args.num_clips, False, random.Random(0))
                    done += 1
                except DecodeError:
                    failed.add(key)
        seconds = time.process_time() - start
        found[backend.name] = {"clips_per_cpu_s": done / max(seconds, 1e-9), "failed": sorted(failed)}
    return found


class FolderClips(Dataset):
    """The reference's reading pattern: one video file per sample, opened by path, decoded with decord."""

    def __init__(self, files: list[tuple[Path, list[str]]], num_clips: int, size: int) -> None:
        self.files, self.num_clips = files, num_clips
        self.transform, self.decoder = FrameTransform(size, True), DecordDecoder()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> DecodedSample:
        path, captions = self.files[index]
        rng = random.Random(index)
        frames = self.decoder.decode(path.read_bytes(), path.suffix[1:], self.num_clips, True, rng)
        return DecodedSample(path.stem, self.transform(frames, rng), captions)


def bench_reference(media: list[tuple[str, str, bytes, list[str]]], folder: Path, args: argparse.Namespace,
                    tokenizer: Any, clips_wanted: int) -> dict[str, float]:
    """Per-sample file reads from `folder` through a shuffled map-style DataLoader, same collation."""
    files = []
    for key, ext, data, captions in media:
        try:  # the reference has no fallback decoder: a clip decord cannot read would stop it
            DecordDecoder().decode(data, ext, args.num_clips, False, random.Random(0))
        except DecodeError:
            print(f"reference baseline: leaving out {key} (decord cannot read it)")
            continue
        path = folder / f"{key}.{ext}"
        if not path.is_file():
            path.write_bytes(data)
        files.append((path, captions))
    files = files * max(1, -(-clips_wanted // len(files)))
    collate = Collator(tokenizer, 30, args.num_clips, MaskingConfig(), True, WorkerRandom(0, 0, 2))
    loader = DataLoader(FolderClips(files, args.num_clips, args.image_size), batch_size=args.batch_size,
                        shuffle=True, num_workers=args.workers, collate_fn=collate, drop_last=True,
                        persistent_workers=True, prefetch_factor=4)
    batches = iter(loader)
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    clips = sum(next(batches).num_videos for _ in range(args.batches))
    return _rate(clips, time.perf_counter() - start, args.num_clips)


def run_data(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    tokenizer = build_tokenizer(ModelConfig())
    media = _media(resolve_shards([args.shards]))
    if not media:
        raise SystemExit(f"error: no decodable sample in {args.shards}")
    clips_wanted = args.batches * args.batch_size
    videos = [m[2] for m in media if m[1] not in ("jpg", "jpeg", "png")]
    results = {"loader": bench_loader(args, tokenizer),
               "limit": bench_limit(videos, args, clips_wanted, seek=False),
               "limit_seek": bench_limit(videos, args, clips_wanted, seek=True),
               "backends": bench_backends(media, args)}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.source_dir) if args.source_dir else Path(scratch)
        results["reference"] = bench_reference(media, folder, args, tokenizer, clips_wanted + args.warmup * args.batch_size)
    loader = results["loader"]["clips_per_s"]
    results["ratios"] = {f"loader/{name}": loader / results[name]["clips_per_s"]
                         for name in ("limit", "limit_seek", "reference")}
    results["cpu_ratios"] = {f"loader/{name}": results["loader"]["clips_per_cpu_s"] / results[name]["clips_per_cpu_s"]
                             for name in ("limit", "limit_seek")}
    print_table(results, args, len(media))
    return results


def print_table(results: dict[str, Any], args: argparse.Namespace, samples: int) -> None:
    print(f"data benchmark: {args.shards} ({samples} samples), decoder={args.decoder} ({_resolved(args.decoder)}), "
          f"workers={args.workers}, batch {args.batch_size} x {args.num_clips} clips at {args.image_size}px, "
          f"{args.batches} timed batches; {_machine()}")
    print(f"{'method':<12}{'clips/s':>10}{'frames/s':>10}{'x limit':>9}{'clips/CPU-s':>13}")
    for name in ("loader", "limit", "limit_seek", "reference"):
        row = results[name]
        per_cpu = f"{row['clips_per_cpu_s']:>13.1f}" if "clips_per_cpu_s" in row else f"{'-':>13}"
        print(f"{name:<12}{row['clips_per_s']:>10.1f}{row['frames_per_s']:>10.1f}"
              f"{row['clips_per_s'] / results['limit']['clips_per_s']:>9.2f}{per_cpu}")
    print("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in results["ratios"].items()))
    print("CPU-time ratios (clips per CPU-second; steadier on a shared machine): "
          + ", ".join(f"{k} = {v:.2f}" for k, v in results["cpu_ratios"].items()))
    print("per-sample CPU backends, seeking the same frames on one core: " + ", ".join(
        f"{name} {row['clips_per_cpu_s']:.1f} clips/s" + (f" (failed on {', '.join(row['failed'])})" if row["failed"]
                                                          else "") for name, row in results["backends"].items()))


def _resolved(decoder: str) -> str:
    """What data.decoder means on this machine (auto: DALI only with a GPU and DALI installed)."""
    from snps3_ds.data.decode.backends import make_decoder
    from snps3_ds.data.loader import _use_dali

    return "DALI, " + make_decoder(decoder).name + " fallback" if _use_dali(decoder) else make_decoder(decoder).name


def _machine() -> str:
    from snps3_ds.perf.cpu_features import cpu_precision

    return f"{cpu_precision().model}, {len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}"
