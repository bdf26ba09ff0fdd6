"""`make gpu-check`: its CPU subset runs here and its report lists every item as run or "not run" with the reason;
the wheel transfer (split into parts, joined and hash-checked, extracted like pip) and the skip rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import REPO
from snps3_ds.perf.gpu_check import check
from snps3_ds.perf.gpu_check.report import FAILED, NOT_RUN, OK, Item, Report
from snps3_ds.perf.gpu_check.wheels import extract_wheel, join_parts, split_into_parts


@pytest.mark.slow
def test_gpu_check_cpu_subset_runs_and_reports_every_item(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "launch/gpu_check.py", "--out", str(out), "--work", str(tmp_path / "w")],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    items = {item["id"]: item for item in report["items"]}
    assert set(items) == {spec.id for spec in check.specs()}, "every item the check knows is listed"
    for item in items.values():
        assert item["status"] in (OK, FAILED, NOT_RUN)
        if item["status"] == NOT_RUN:
            assert item["reason"], f"{item['id']} is not run without a reason"
        if item["gpu"]:
            assert item["status"] == NOT_RUN and item["reason"] == "no CUDA device", item
    assert items["cpu_training_step"]["status"] == OK, items["cpu_training_step"]
    assert items["cpu_training_step"]["figures"]["steps"] == 1
    equivalence = items["cpu_dali_equivalence_vp9"]
    assert equivalence["status"] == OK, equivalence
    assert equivalence["figures"]["mean_abs_diff_vs_pyav"] <= equivalence["figures"]["tolerance_mean_abs_diff"]
    markdown = (out / "report.md").read_text()
    assert all(item_id in markdown for item_id in items) and "not run" in markdown


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            archive.writestr(info, data)
    return path


def test_gpu_check_wheel_parts_join_only_when_complete_and_intact(tmp_path: Path) -> None:
    wheels = [_wheel(tmp_path / f"pkg{i}-1.0-py3-none-any.whl", {f"pkg{i}/__init__.py": bytes(range(256)) * 40})
              for i in range(3)]
    parts = tmp_path / "dali"
    parts.mkdir()
    manifest = split_into_parts(wheels, parts, part_bytes=4096)
    assert manifest["dali_parts"] > 3 and all(p.stat().st_size <= 4096 for p in parts.glob("part-*"))
    last = sorted(parts.glob("part-*"))[-1]
    kept = last.read_bytes()
    last.unlink()
    assert join_parts(parts)[0] == [] and "missing" in join_parts(parts)[1]
    last.write_bytes(b"x" + kept[1:])
    assert join_parts(parts)[0] == [] and "sha256" in join_parts(parts)[1]
    last.write_bytes(kept)
    joined, note = join_parts(parts)
    assert note == "" and [w.read_bytes() for w in joined] == [w.read_bytes() for w in wheels]


def test_gpu_check_wheel_extraction_lays_out_site_packages(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "demo-1.0-py3-none-any.whl", {
        "demo/__init__.py": b"VALUE = 1\n", "demo-1.0.dist-info/METADATA": b"Name: demo\n",
        "demo-1.0.data/purelib/demo_extra.py": b"", "demo-1.0.data/scripts/demo": b"#!/bin/sh\n"})
    extract_wheel(wheel, tmp_path / "site")
    assert (tmp_path / "site" / "demo" / "__init__.py").read_text() == "VALUE = 1\n"
    assert (tmp_path / "site" / "demo_extra.py").is_file(), "purelib data is folded into the site"
    assert not (tmp_path / "site" / "demo").joinpath("..", "demo-1.0.data").exists(), "scripts are left out"
    assert (tmp_path / "site" / "demo" / "__init__.py").stat().st_mode & 0o755 == 0o755


def _context(tmp_path: Path, cuda: bool, found: set[str]) -> check.Context:
    return check.Context(check.CheckOptions(tmp_path, tmp_path, budget_s=100), cuda, {m: "1" for m in found}, 2, [])


def test_gpu_check_skip_reasons(tmp_path: Path) -> None:
    everything = set(check.PACKAGES)
    by_id = {s.id: s for s in check.specs()}
    cpu = _context(tmp_path, cuda=False, found=everything)
    assert check._skip_reason(by_id["gpu_train_vst_bf16"], cpu, 100) == "no CUDA device"
    assert check._skip_reason(by_id["cpu_training_step"], cpu, 200) is None
    gpu = _context(tmp_path, cuda=True, found=everything - {"nvidia.dali"})
    assert "nvidia.dali not importable" in check._skip_reason(by_id["gpu_dali_equivalence_h264"], gpu, 400)
    assert check._skip_reason(by_id["gpu_train_vst_bf16"], gpu, 400) is None, "training falls back to PyAV"
    assert check._skip_reason(by_id["cpu_training_step"], gpu, 400).startswith("CUDA present")
    assert "time budget" in check._skip_reason(by_id["gpu_train_vst_bf16"], gpu, 10)


def test_gpu_check_report_lists_every_item_in_markdown(tmp_path: Path) -> None:
    items = [Item("a", "first", False, OK, figures={"clips_per_s": 12.5}), Item("b", "second", True).not_run("no CUDA device")]
    Report({"device": "CPU only", "cpu": "x", "cores": 2, "python": "3", "torch": torch.__version__}, items).write(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| a: first | ok |" in text and "| b: second | not run | 0 | no CUDA device |" in text
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == {OK: 1, FAILED: 0, NOT_RUN: 1}
