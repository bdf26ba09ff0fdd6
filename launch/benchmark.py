"""Benchmarks that print figures (DESIGN §6); not timed tests.

    python launch/benchmark.py data --shards OUT_PREFIX [--decoder auto] [--workers 2] [--batch-size 16]
    python launch/benchmark.py train [--config RECIPE] [--modes ddp,zero2] [--accum 1,2,4,8] [--negatives step,micro]

What each measures: snps3_ds/perf/data_benchmark.py and snps3_ds/perf/train_benchmark.py (and --help).
"""

import sys

from snps3_ds.run.benchmark import main

if __name__ == "__main__":
    main()
    sys.exit(0)
