"""`system/` metrics: this process's memory on the host and, where there is one, on the GPU."""

from __future__ import annotations

import psutil
import torch


def system_stats() -> dict[str, float]:
    row = {"system/cpu_rss_gb": psutil.Process().memory_info().rss / 2**30}
    if torch.cuda.is_available():
        row["system/gpu_mem_gb"] = torch.cuda.memory_allocated() / 2**30
        row["system/gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
        row["system/gpu_mem_reserved_gb"] = torch.cuda.memory_reserved() / 2**30
    return row
