"""Build WebDataset shards (DESIGN §3.1) from a dataset's annotation file and its local media.

    python data_prep/build_shards.py --manifest MSRVTT_JSFUSION_test.csv --format msrvtt_jsfusion \\
        --media-root /data/msrvtt/videos --out /data/shards/msrvtt_test --resize 256 --fps 8

Formats: jsonl, csv (generic: path + caption/captions [+ start/end]), webvid, cc3m (needs --url-map), coco,
vg, msrvtt, msrvtt_jsfusion, msvd, didemo, wds (existing shards, e.g. video2dataset output).

Media are checked, optionally trimmed to [start, end], resized (--resize: short side) and re-encoded
(--codec h264|vp9, keyframe every --gop frames); `copy` keeps the source bytes. Without --codec, media are
copied unless --resize/--fps ask for a re-encode, which is then H.264. Work runs on --workers processes;
samples are written in input order. Bad inputs (missing file, undecodable, zero frames, empty caption,
unreadable manifest row) are skipped and listed with their reason in OUT.shards.json. A rerun with the same
settings keeps the finished shards and builds only what is missing (--overwrite starts again).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from snps3_ds.data.errors import DecodeError
from snps3_ds.datasets.base import ManifestError, ReaderOptions, SourceItem
from snps3_ds.datasets.registry import FORMATS, read_manifest
from snps3_ds.sharding.transcode import EncodeOptions, prepare_sample
from snps3_ds.sharding.writer import ShardWriter

log = logging.getLogger("build_shards")
CODECS = ("copy", "h264", "vp9")


def _prepare_safe(job: tuple[SourceItem, EncodeOptions]) -> dict[str, Any]:
    """Worker entry point: a bad input becomes a failure record instead of an exception."""
    item, options = job
    try:
        return prepare_sample(item, options)
    except DecodeError as err:
        return {"key": item.key, "reason": err.reason, "detail": err.detail, "source": str(item.path or "")}
    except Exception as err:  # noqa: BLE001 - one input must never stop the build
        return {"key": item.key, "reason": f"error_{type(err).__name__}", "detail": str(err)[:300],
                "source": str(item.path or "")}


def build_info(args: argparse.Namespace, options: EncodeOptions) -> dict[str, Any]:
    """The settings a resumed build must share with the build it continues."""
    return {"format": args.format, "manifest": str(Path(args.manifest).resolve()), "codec": options.codec,
            "resize": options.short_side, "fps": options.fps, "gop": options.gop, "crf": options.crf,
            "shard_size": args.shard_size, "split": args.split}


def _check_resume(out: Path, info: dict[str, Any], overwrite: bool) -> None:
    """Delete an earlier build when asked; refuse to continue one made with other settings."""
    manifest = out.parent / f"{out.name}.shards.json"
    if overwrite:
        pattern = re.compile(rf"{re.escape(out.name)}-\d{{6}}\.(tar|idx)(\.tmp)?")
        for path in out.parent.glob(f"{out.name}-*"):
            if pattern.fullmatch(path.name):
                path.unlink()
        manifest.unlink(missing_ok=True)
        return
    if manifest.is_file():
        previous = json.loads(manifest.read_text()).get("build")
        changed = {k: (previous.get(k), v) for k, v in info.items() if previous and previous.get(k) != v}
        if previous is None or changed:
            raise SystemExit(f"error: {manifest} comes from a build with other settings "
                             f"({changed or 'no build record'}); use --overwrite or another --out")


def _jobs(items: Iterator[SourceItem], done: set[str], options: EncodeOptions,
          skipped: list[int]) -> Iterator[tuple[SourceItem, EncodeOptions]]:
    for item in items:
        if item.key in done:
            skipped[0] += 1
            continue
        yield item, options


def build(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run the build; returns a summary (samples, shards, failures by reason, seconds)."""
    options = encode_options(args)
    reader_options = ReaderOptions(url_map=Path(args.url_map) if args.url_map else None, split=args.split)
    media_root = Path(args.media_root) if args.media_root else None
    out = Path(args.out)
    info = build_info(args, options)
    _check_resume(out, info, args.overwrite)
    total = None if args.format == "wds" else sum(1 for _ in read_manifest(args.format, Path(args.manifest),
                                                                           media_root, reader_options))
    start, resumed = time.perf_counter(), [0]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(args.workers) if args.workers > 1 else None
    try:
        with ShardWriter(out, max_samples=args.shard_size, max_bytes=args.max_bytes, command=command, resume=True,
                         checkpoint_manifest=True, build_info=info) as writer:
            jobs = _jobs(read_manifest(args.format, Path(args.manifest), media_root, reader_options),
                         writer.done_keys(), options, resumed)
            results = pool.imap(_prepare_safe, jobs, chunksize=2) if pool else map(_prepare_safe, jobs)
            for result in tqdm(results, total=total, desc=out.name, unit="sample"):
                if "reason" in result:
                    writer.add_failure(result["key"], result["reason"], result["detail"], result["source"])
                else:
                    writer.write(**result)
        manifest = writer.manifest()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return summarize(manifest, resumed[0], time.perf_counter() - start)


def summarize(manifest: dict[str, Any], resumed: int, seconds: float) -> dict[str, Any]:
    reasons = Counter(f["reason"] for f in manifest["failures"])
    for failure in manifest["failures"][:20]:
        log.warning("skipped %s (%s): %s", failure["key"], failure["reason"], failure.get("detail", ""))
    return {"samples": manifest["num_samples"], "shards": len(manifest["shards"]), "kept_from_earlier_build": resumed,
            "failures": dict(reasons), "codecs": manifest["codecs"], "seconds": round(seconds, 2)}


def encode_options(args: argparse.Namespace) -> EncodeOptions:
    codec = args.codec or ("h264" if args.resize or args.fps else "copy")
    if codec == "copy" and (args.resize or args.fps):
        raise SystemExit("error: --resize/--fps re-encode the media; use --codec h264 or vp9, not copy")
    return EncodeOptions(codec=codec, short_side=args.resize, fps=args.fps, gop=args.gop, crf=args.crf)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--manifest", required=True, help="annotation file (for wds: shard spec)")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--media-root", help="folder the media paths are relative to (default: the manifest's)")
    parser.add_argument("--out", required=True, help="output prefix: OUT-000000.tar, OUT-000000.idx, OUT.shards.json")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    parser.add_argument("--max-bytes", type=int, default=1 << 30, help="bytes per shard")
    parser.add_argument("--codec", choices=CODECS, help="copy keeps the source bytes (default unless resizing)")
    parser.add_argument("--resize", type=int, help="short side in pixels (never upscales)")
    parser.add_argument("--fps", type=float, help="resample to this frame rate")
    parser.add_argument("--gop", type=int, default=8, help="keyframe interval when re-encoding")
    parser.add_argument("--crf", type=int, help="encoder quality (default 23 for h264, 32 for vp9)")
    parser.add_argument("--split", help="msrvtt: keep only this split (train, validate, test)")
    parser.add_argument("--url-map", help="cc3m: JSON or TSV mapping each url to its downloaded file")
    parser.add_argument("--overwrite", action="store_true", help="delete an earlier build at --out first")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.shard_size < 1 or args.gop < 1:
        parser.error("--workers, --shard-size and --gop must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = " ".join(["python", "data_prep/build_shards.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        summary = build(args, command)
    except ManifestError as err:
        raise SystemExit(f"error: {err}") from None
    log.info("done: %s", summary)
    if summary["samples"] == 0:
        raise SystemExit(f"error: no sample could be built; failures: {summary['failures']}")
    return summary
