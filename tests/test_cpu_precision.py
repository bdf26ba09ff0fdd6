"""CPU precision: native bf16 detected from the CPU flags (or forced by SNPS3_CPU_BF16), the warning a bf16 run
prints where bf16 is emulated, and the demo's choice between the bf16 and the fp32 ds_config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from snps3_ds.engine.ds_config import load_ds_config
from snps3_ds.perf.cpu_features import ENV, bf16_warning, choose_ds_config, cpu_precision

XEON_WITHOUT = "model name\t: Intel(R) Xeon(R) CPU @ 2.80GHz\nflags\t\t: fpu sse avx2 avx512f avx512bw\n"
XEON_WITH = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n"
ARM_WITH = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, native", [(XEON_WITHOUT, False), (XEON_WITH, True), (ARM_WITH, True), ("", False)])
def test_cpu_precision_reads_the_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                       native: bool) -> None:
    monkeypatch.delenv(ENV, raising=False)
    info = cpu_precision(_cpuinfo(tmp_path, text))
    assert info.native_bf16 is native
    if text.startswith("model name"):
        assert info.model.startswith("Intel(R) Xeon(R)")


def test_cpu_precision_environment_overrides_the_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0")
    assert not cpu_precision(_cpuinfo(tmp_path, XEON_WITH)).native_bf16
    monkeypatch.setenv(ENV, "1")
    assert cpu_precision(_cpuinfo(tmp_path, XEON_WITHOUT)).native_bf16
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(ValueError, match=f"{ENV}: expected 1 .* or 0"):
        cpu_precision(_cpuinfo(tmp_path, XEON_WITH))


def test_bf16_warning_names_the_cpu_and_the_fp32_alternative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    without, with_ = cpu_precision(_cpuinfo(tmp_path, XEON_WITHOUT)), cpu_precision(_cpuinfo(tmp_path, XEON_WITH))
    warning = bf16_warning("bf16", "cpu", "ds_configs/zero2.json", without)
    assert warning is not None and "Intel(R) Xeon(R) CPU @ 2.80GHz" in warning
    assert "ds_configs/zero2_fp32.json" in warning and "emulated" in warning
    assert bf16_warning("bf16", "cpu", "x.json", with_) is None, "native bf16: nothing to warn about"
    assert bf16_warning("fp32", "cpu", "x.json", without) is None
    assert bf16_warning("bf16", "cuda", "x.json", without) is None


def test_choose_ds_config_takes_fp32_only_where_bf16_is_emulated(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    without, with_ = cpu_precision(_cpuinfo(tmp_path, XEON_WITHOUT)), cpu_precision(_cpuinfo(tmp_path, XEON_WITH))
    assert choose_ds_config("b.json", "f.json", False, without)[0] == "f.json"
    assert choose_ds_config("b.json", "f.json", False, with_)[0] == "b.json"
    assert choose_ds_config("b.json", "f.json", True, without)[0] == "b.json"
    path, why = choose_ds_config("b.json", "f.json", False, without)
    assert why.startswith("fp32") and "no native bf16" in why


def test_zero2_fp32_is_zero2_without_bf16() -> None:
    bf16, fp32 = (load_ds_config(REPO / "ds_configs" / name) for name in ("zero2.json", "zero2_fp32.json"))
    assert (bf16.precision, fp32.precision) == ("bf16", "fp32")
    same = ("micro_batch_size", "grad_accum", "gradient_clipping", "zero_stage", "offload_optimizer")
    assert all(getattr(bf16, key) == getattr(fp32, key) for key in same)
    assert {k: v for k, v in json.loads(Path(bf16.path).read_text()).items() if k not in ("bf16", "data_types")} \
        == json.loads(Path(fp32.path).read_text())


@pytest.mark.parametrize("forced, chosen", [("0", "ds_configs/zero2_fp32.json"), ("1", "ds_configs/zero2.json")])
def test_pick_ds_config_prints_the_choice_and_why(forced: str, chosen: str) -> None:
    """The Makefile's demo target reads stdout; the reason goes to stderr for the user."""
    env = {**os.environ, ENV: forced, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "launch/pick_ds_config.py", "ds_configs/zero2.json",
                           "ds_configs/zero2_fp32.json"], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == chosen
    assert f"{ENV}={forced}" in done.stderr and chosen in done.stderr


@pytest.mark.slow
def test_a_bf16_run_on_an_emulating_cpu_prints_the_warning(tiny_corpus: Path, tmp_path: Path) -> None:
    """The run flow itself warns (forced with SNPS3_CPU_BF16=0, since this machine may well have native bf16)."""
    ds = tmp_path / "bf16.json"
    ds.write_text(json.dumps({**json.loads((REPO / "ds_configs" / "zero2.json").read_text()),
                              "train_micro_batch_size_per_gpu": 4}))
    env = {**os.environ, ENV: "0", "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "launch/pretrain.py", "--config", "launch/recipes/tiny.yaml", "--ds_config",
                           str(ds), f"data.train_shards=[{tiny_corpus / 'train'}]",
                           f"data.eval_shards=[{tiny_corpus / 'test'}]", "train.max_steps=1",
                           f"train.run_dir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "has no native bf16" in done.stdout and "ds_configs/zero2_fp32.json" in done.stdout
