"""Benchmarks that print figures (DESIGN §6); not timed tests.

    python launch/benchmark.py data --shards OUT_PREFIX [--decoder decord|dali|auto|pyav] [--workers 2]
        [--batch-size 16] [--num-clips 4] [--image-size 224] [--batches 30] [--source-dir DIR]

`data` measures clips/s and frames/s of the training loader (decode, sample, resize/crop/normalise,
tokenise, mask, collate) and of two baselines on the same cores and the same samples:
  limit:      a plain sequential PyAV decode of the same frames (centre of each segment): each clip decoded
              from its start up to its last sampled frame, one single-threaded process per worker, nothing
              else (no transforms, no text, no batching): what decoding alone costs on these cores;
  limit_seek: the same with a seek to the keyframe before each sampled frame (the tighter bound on
              short-GOP shards);
  reference:  the reference implementation's approach, one media file per sample read from a folder by a
              map-style Dataset (decord from the path), with the same transforms and collation.
and prints the ratios loader/limit, loader/limit_seek and loader/reference, in clips/s and in clips per
CPU-second (steadier where other jobs share the machine), and PyAV against decord seeking the same frames on
one core (what `data.decoder: auto` ranks the CPU backends by).

    python launch/benchmark.py train [--config RECIPE] [--ds_config BASE] [--steps 10] [--warmup 2]
        [--modes ddp,zero1,zero2,zero2_offload] [--world 2] [--micro N] [--data synthetic|loader]
        [--out results.json] [a.b=value ...]

`train` measures the training step (forward, backward, reduction, optimiser) of the recipe's model in
`--world` fresh processes per mode: plain DDP, then DeepSpeed with the base ds_config turned into
ZeRO-1 / ZeRO-2 / ZeRO-2 + CPU optimiser offload. It prints step time, global samples/s (and the
ratio to DDP), peak memory per rank and optimiser-state MB per rank (snps3_ds/perf/train_benchmark.py).
"""

import sys

from snps3_ds.run.benchmark import main

if __name__ == "__main__":
    main()
    sys.exit(0)
