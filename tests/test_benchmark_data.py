"""`launch/benchmark.py data` end to end on the tiny corpus: every figure it prints is there (a smoke test of the
benchmark, not a timing test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snps3_ds.run.benchmark import main


@pytest.mark.slow
def test_benchmark_data_prints_wall_and_cpu_ratios_and_backends(tiny_corpus: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    results = main(["data", "--shards", str(tiny_corpus / "train"), "--decoder", "auto", "--workers", "2",
                    "--batch-size", "4", "--num-clips", "2", "--image-size", "32", "--batches", "3", "--warmup", "1",
                    "--json", str(tmp_path / "data.json")])
    for name in ("loader", "limit", "limit_seek", "reference"):
        assert results[name]["clips_per_s"] > 0
    assert results["loader"]["clips_per_cpu_s"] > 0 and results["limit_seek"]["clips_per_cpu_s"] > 0
    assert set(results["ratios"]) == {"loader/limit", "loader/limit_seek", "loader/reference"}
    assert set(results["cpu_ratios"]) == {"loader/limit", "loader/limit_seek"}
    assert set(results["backends"]) == {"pyav", "decord"} and results["backends"]["pyav"]["failed"] == []
    printed = capsys.readouterr().out
    assert "decoder=auto (pyav+decord)" in printed and "CPU-time ratios" in printed and "per-sample CPU backends" in printed
    assert (tmp_path / "data.json").is_file()
