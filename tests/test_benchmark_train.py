"""The training-step benchmark runs end to end: DDP and ZeRO-2 on 2 CPU ranks, tiny recipe, synthetic batches.

It checks that every mode produced a row with figures, never how fast: timings are for the printout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, TINY_RECIPE



@pytest.mark.slow
def test_benchmark_train_reports_every_mode(tmp_path: Path) -> None:
    from snps3_ds.run import benchmark

    out = tmp_path / "results.json"
    benchmark.main(["train", "--config", str(TINY_RECIPE), "--ds_config", str(REPO / "ds_configs" / "tiny_fp32.json"),
                    "--modes", "ddp,zero2", "--world", "2", "--steps", "2", "--warmup", "1",
                    "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    rows = {row["mode"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"ddp", "zero2"}
    for mode, row in rows.items():
        assert "error" not in row, f"{mode}: {row.get('error')}"
        assert row["world"] == 2 and row["samples_per_s"] > 0 and len(row["per_rank"]) == 2
    # ZeRO-2 holds about half of the Adam moments on each of 2 ranks (partitions are padded a little)
    assert rows["zero2"]["optimizer_state_mb"] < 0.6 * rows["ddp"]["optimizer_state_mb"]


@pytest.mark.slow
def test_benchmark_train_large_batch_rows_with_and_without_global_negatives(tmp_path: Path) -> None:
    """`--accum 2 --negatives step,micro`: a row each, the negatives per step, and the ratio to the plain step."""
    from snps3_ds.run import benchmark

    out = tmp_path / "results.json"
    benchmark.main(["train", "--config", str(TINY_RECIPE), "--ds_config", str(REPO / "ds_configs" / "tiny_fp32.json"),
                    "--modes", "zero2", "--accum", "2", "--negatives", "step,micro", "--world", "2", "--steps", "1",
                    "--warmup", "1", "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    rows = {row["negatives"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"step", "micro"} and not any("error" in row for row in rows.values()), rows
    micro = rows["micro"]["micro"]
    assert rows["step"]["planned"] and rows["step"]["negatives_per_step"] == micro * 2 * 2
    assert not rows["micro"]["planned"] and rows["micro"]["negatives_per_step"] == micro * 2
    assert rows["step"]["time_vs_plain"] > 0 and rows["step"]["memory_vs_plain"] > 0
