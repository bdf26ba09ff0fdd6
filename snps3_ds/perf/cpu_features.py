"""Whether this CPU computes bf16 natively, and which precision a CPU run should therefore use.

Why it matters: on a CPU without bf16 instructions (AVX512_BF16 or AMX on x86, the BF16 extension on Arm)
torch emulates bf16 matmuls by converting to fp32 and back, so a bf16 ds_config is slower than fp32 there
(a ZeRO-2 step of the demo model took 1.70x as long on a 2-core Xeon without them). With the instructions,
oneDNN runs bf16 dot products directly. The answer comes from the CPU's flags (/proc/cpuinfo); the
environment variable SNPS3_CPU_BF16=1|0 overrides it, to force either path (tests, or a CPU we misread).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

ENV = "SNPS3_CPU_BF16"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 `flags`; Arm's `Features` lists `bf16`
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuPrecision:
    """What the CPU offers for bf16, and why we think so."""

    model: str
    native_bf16: bool
    reason: str


def _cpuinfo(path: Path) -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU listed; ("", set()) where there is no cpuinfo (macOS, Windows)."""
    model, flags = "", set()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor() or "", set()
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_precision(path: Path = CPUINFO) -> CpuPrecision:
    """Native bf16 or not, from SNPS3_CPU_BF16 when set, else from the CPU flags."""
    model, flags = _cpuinfo(path)
    model = model or platform.machine() or "unknown CPU"
    forced = os.environ.get(ENV)
    if forced is not None:
        if forced not in ("0", "1"):
            raise ValueError(f"{ENV}: expected 1 (native bf16) or 0 (emulated), got {forced!r}")
        return CpuPrecision(model, forced == "1", f"{ENV}={forced} set in the environment")
    found = sorted(flags & set(NATIVE_BF16_FLAGS))
    if found:
        return CpuPrecision(model, True, f"the CPU flags include {', '.join(found)}")
    return CpuPrecision(model, False, f"no {'/'.join(NATIVE_BF16_FLAGS[:2])} flag in {path}: bf16 is emulated")


def bf16_warning(precision: str, device_type: str, ds_config: str, info: CpuPrecision | None = None) -> str | None:
    """The warning a CPU run with a bf16 ds_config prints where bf16 is emulated; None when there is none."""
    if precision != "bf16" or device_type != "cpu":
        return None
    info = info or cpu_precision()
    if info.native_bf16:
        return None
    return (f"WARNING: {ds_config} trains in bf16, but this CPU ({info.model}) has no native bf16 ({info.reason}); "
            f"bf16 is emulated and slower than fp32 here. For speed use an fp32 ds_config instead, e.g. "
            f"--ds_config ds_configs/zero2_fp32.json (the same ZeRO-2 settings without bf16).")


def choose_ds_config(bf16_config: str, fp32_config: str, cuda: bool,
                     info: CpuPrecision | None = None) -> tuple[str, str]:
    """(ds_config, why) for a run that may use either precision: bf16 on a GPU and where the CPU has
    native bf16, fp32 where bf16 would be emulated."""
    if cuda:
        return bf16_config, "bf16: training on CUDA"
    info = info or cpu_precision()
    if info.native_bf16:
        return bf16_config, f"bf16: this CPU ({info.model}) computes bf16 natively ({info.reason})"
    return fp32_config, (f"fp32: this CPU ({info.model}) has no native bf16 ({info.reason}), "
                         f"and emulated bf16 is slower than fp32")
