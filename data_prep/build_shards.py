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

from snps3_ds.sharding.build import main

if __name__ == "__main__":
    main()
