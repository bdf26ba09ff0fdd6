"""The GPU check (`make gpu-check`): on one CUDA GPU, DALI mixed decoding of H.264/VP9 against PyAV/decord (frames
and clips/s), bf16 and fp16 ZeRO-2 training of the PVT and VST recipes fed by DALI (step time, samples/s, peak
memory, MFU, data-wait fraction) and a stopped-and-resumed run, in about 8 minutes; without CUDA its CPU subset.
Writes OUT/report.json and OUT/report.md; every item is listed as ok, failed or "not run" with the reason.

    PYTHONPATH=$PWD:$PWD/gpu_site python launch/gpu_check.py [--out runs/gpu_check] [--budget 460]
"""

import argparse
import sys
from pathlib import Path

from snps3_ds.perf.gpu_check.check import CheckOptions, run_check

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/gpu_check", help="report folder")
    parser.add_argument("--work", help="shards and runs (default: OUT/work)")
    parser.add_argument("--budget", type=float, default=460.0, help="seconds for all items together")
    args = parser.parse_args()
    out = Path(args.out)
    report = run_check(CheckOptions(out, Path(args.work) if args.work else out / "work", args.budget))
    summary = report.to_dict()["summary"]
    print(f"gpu check: {summary}; report in {out / 'report.md'}", flush=True)
    sys.exit(1 if summary["failed"] else 0)
