"""Decode every sample of a shard set and report counts, codecs, kinds and failures.

    python data_prep/verify_shards.py OUT_PREFIX [--decoder auto] [--num-clips 4] [--workers N] [--report r.json]

OUT_PREFIX is anything data.train_shards accepts (a shards.json prefix, a tar, a glob). Each sample goes
through the loader's own checks (json, captions, media member) and decoder (default `auto`: decord with PyAV
as fallback), so a clean report means the loader will not skip anything. Sample counts are compared with
the shards.json when there is one. Exit status 1 when anything failed.
"""

from snps3_ds.sharding.verify import main

if __name__ == "__main__":
    main()
