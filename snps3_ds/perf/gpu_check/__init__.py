"""`make gpu-check`: one prepared command that measures the GPU path on the node we can get (one CUDA GPU,
minutes at a time, air-gapped), and runs its CPU subset everywhere else.

wheels.py (what the node lacks, carried in <= 64 MiB transfers and unpacked without pip), corpus.py (shards
built on the fly), report.py (items, report.json / report.md), decode.py (DALI against PyAV/decord: frames and
clips/s), training.py (the real training flow in subprocesses: step time, memory, MFU, data wait, resume),
check.py (which items run here, in what order, within the time budget).
"""
