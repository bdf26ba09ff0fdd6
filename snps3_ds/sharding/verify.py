"""Decode every sample of a shard set and report counts, codecs, kinds and failures.

    python data_prep/verify_shards.py OUT_PREFIX [--decoder auto] [--num-clips 4] [--workers N] [--report r.json]

OUT_PREFIX is anything data.train_shards accepts (a shards.json prefix, a tar, a glob). Each sample goes
through the loader's own checks (json, captions, media member) and decoder (default `auto`: decord with PyAV
as fallback), so a clean report means the loader will not skip anything. Sample counts are compared with
the shards.json when there is one. Exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

import webdataset as wds

from snps3_ds.data.decode.backends import FallbackDecoder, make_decoder
from snps3_ds.data.errors import DecodeError
from snps3_ds.data.decode.pyav import probe_video
from snps3_ds.data.samples import media_member, sample_meta
from snps3_ds.data.stream.shards import ShardSpecError, resolve_shards
from snps3_ds.data.skips import SkipCounter

log = logging.getLogger("verify_shards")


def _codec(meta: dict[str, Any], ext: str, data: bytes) -> str:
    if meta.get("codec"):
        return str(meta["codec"])
    if ext in ("jpg", "jpeg", "png", "webp"):
        return ext
    try:
        return probe_video(data).codec
    except DecodeError:
        return "unknown"


def verify_shard(job: tuple[str, str, int]) -> dict[str, Any]:
    """Decode every sample of one tar; returns its counts and failures."""
    url, decoder_name, num_clips = job
    decoder, counter = make_decoder(decoder_name), SkipCounter()
    codecs, kinds, failures, samples = Counter(), Counter(), [], 0
    for raw in wds.tarfile_to_samples(handler=counter.shard_handler)([{"url": url}]):
        samples += 1
        try:
            meta = sample_meta(raw)
            ext, data = media_member(raw)
            frames = decoder.decode(data, ext, num_clips, False, random.Random(0), meta.get("start"), meta.get("end"))
            codecs[_codec(meta, ext, data)] += 1
            kinds[meta.get("kind") or ("image" if frames.shape[0] == 1 and ext == "jpg" else "video")] += 1
        except DecodeError as err:
            failures.append({"key": raw.get("__key__", "?"), "reason": err.reason, "detail": err.detail[:200]})
        except Exception as err:  # noqa: BLE001 - report, never stop the scan
            failures.append({"key": raw.get("__key__", "?"), "reason": f"error_{type(err).__name__}",
                             "detail": str(err)[:200]})
    failures += [{"key": "(shard)", "reason": r, "detail": url} for r, n in counter.total.items() for _ in range(n)]
    rescued = decoder.fallbacks if isinstance(decoder, FallbackDecoder) else 0
    return {"url": url, "samples": samples, "ok": samples - sum(f["key"] != "(shard)" for f in failures),
            "codecs": dict(codecs), "kinds": dict(kinds), "fallback_decodes": rescued, "failures": failures}


def expected_counts(spec: str) -> dict[str, int]:
    """{tar path: num_samples} from the shards.json beside `spec`, if there is one."""
    index = Path(spec if spec.endswith(".shards.json") else spec + ".shards.json")
    if not index.is_file():
        return {}
    return {str(index.parent / s["path"]): s["num_samples"] for s in json.loads(index.read_text())["shards"]}


def verify(spec: str, decoder: str, num_clips: int, workers: int) -> dict[str, Any]:
    urls = resolve_shards([spec])
    jobs = [(url, decoder, num_clips) for url in urls]
    if workers > 1 and len(urls) > 1:
        with mp.get_context("fork").Pool(min(workers, len(urls))) as pool:
            shards = list(tqdm(pool.imap(verify_shard, jobs), total=len(jobs), desc="shards"))
    else:
        shards = [verify_shard(job) for job in tqdm(jobs, desc="shards")]
    expected = expected_counts(spec)
    mismatched = [{"url": s["url"], "expected": expected[s["url"]], "found": s["samples"]}
                  for s in shards if s["url"] in expected and expected[s["url"]] != s["samples"]]
    failures = [dict(f, url=s["url"]) for s in shards for f in s["failures"]]
    return {"spec": spec, "decoder": decoder, "shards": len(shards), "samples": sum(s["samples"] for s in shards),
            "ok": sum(s["ok"] for s in shards), "fallback_decodes": sum(s["fallback_decodes"] for s in shards),
            "codecs": dict(sum((Counter(s["codecs"]) for s in shards), Counter())),
            "kinds": dict(sum((Counter(s["kinds"]) for s in shards), Counter())),
            "failure_reasons": dict(Counter(f["reason"] for f in failures)), "count_mismatches": mismatched,
            "failures": failures, "per_shard": shards}


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['spec']}: {report['shards']} shard(s), {report['samples']} samples, {report['ok']} decoded "
          f"({report['fallback_decodes']} by the fallback decoder) with {report['decoder']}")
    print(f"  codecs: {report['codecs']}\n  kinds:  {report['kinds']}")
    print(f"  failures: {report['failure_reasons'] or 'none'}")
    for failure in report["failures"][:20]:
        print(f"    {failure['key']} ({failure['reason']}): {failure['detail']}  [{Path(failure['url']).name}]")
    for mismatch in report["count_mismatches"]:
        print(f"  count mismatch: {mismatch['url']} lists {mismatch['expected']}, holds {mismatch['found']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", help="OUT_PREFIX (or a shards.json, tar, glob, brace pattern)")
    parser.add_argument("--decoder", default="auto", choices=["auto", "decord", "pyav"])
    parser.add_argument("--num-clips", type=int, default=4, help="frames decoded per video (centre of each segment)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--report", help="also write the full report as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    try:
        report = verify(args.shards, args.decoder, args.num_clips, args.workers)
    except ShardSpecError as err:
        raise SystemExit(f"error: {err}") from None
    print_report(report)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1))
    if report["failures"] or report["count_mismatches"]:
        raise SystemExit(1)
    return report
