"""Build WebDataset shards (DESIGN §3.1) from a dataset's annotation file and its local media.

    python data_prep/build_shards.py --manifest MSRVTT_JSFUSION_test.csv --format msrvtt_jsfusion \\
        --media-root /data/msrvtt/videos --out /data/shards/msrvtt_test --resize 256 --fps 8

Formats, re-encoding, failures and resumed builds: snps3_ds/sharding/build.py (and --help).
"""

from snps3_ds.sharding.build import main

if __name__ == "__main__":
    main()
