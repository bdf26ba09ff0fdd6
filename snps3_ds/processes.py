"""One way to start and leave a run's processes: training, evaluation and the benchmarks all use it.

A launcher (`deepspeed`, `torchrun`, the benchmark's own) sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT; a plain `python` run is a world of one. The process group is torch.distributed's own (NCCL
on CUDA, gloo on the CPU); DeepSpeed's engine adopts an initialised group instead of making another, so
nothing here imports deepspeed.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """Where this process sits in the run."""

    rank: int
    world: int
    local_world: int
    device: torch.device


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for a rendezvous on this machine)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _world_of_one() -> None:
    """The environment a launcher would set for a single process, on a free local port."""
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(free_port()))


def start_processes(group: bool = True, timeout_s: float | None = None) -> Processes:
    """This process's rank and device; with `group` (or several ranks) the process group is started.

    `group=False` serves one-process tools that need no collectives (the plain-torch engine). A world of
    one still gets a group when asked: DeepSpeed needs one. `timeout_s` bounds every collective, so a
    lost rank surfaces as an error instead of a hang (torch's default is 30 minutes).
    """
    if "RANK" not in os.environ and group:
        _world_of_one()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives and all_gather_object use the current device
    if (group or world > 1) and not dist.is_initialized():
        kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kwargs)
        if timeout_s:
            _bound_later_groups(timedelta(seconds=timeout_s))
    rank = dist.get_rank() if dist.is_initialized() else 0
    local_world = int(os.environ.get("LOCAL_SIZE", os.environ.get("LOCAL_WORLD_SIZE", world)))
    share_cpu_threads(local_world)
    return Processes(rank, world, local_world, device)


def _bound_later_groups(timeout: timedelta) -> None:
    """Groups made later without a timeout (DeepSpeed clones the world group for ZeRO's collectives) take
    torch's module default, 30 minutes; make that default this run's bound too."""
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timeout
    if hasattr(distributed_c10d, "default_pg_nccl_timeout"):
        distributed_c10d.default_pg_nccl_timeout = timeout


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def shut_down(world: int) -> None:
    """Leave the process group together: a gloo/NCCL group torn down by interpreter exit while its threads
    still run can abort the process ("terminate called without an active exception") after a good run."""
    if dist.is_available() and dist.is_initialized():
        if world > 1:
            dist.barrier()
        dist.destroy_process_group()
    remove_shm_buffer()


def remove_shm_buffer() -> None:
    """Unlink this rank's DeepSpeed CPU all-reduce buffer. DeepSpeed's shm backend (ops/csrc/cpu/comm/shm.cpp)
    creates /dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank> (69 MB) and never unlinks it,
    so every CPU run left 69 MB per rank in /dev/shm until a test machine ran out of memory. Called after the
    final barrier, when no rank reads the buffers any more."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if addr is None or port is None or torch.cuda.is_available():
        return
    name = Path("/dev/shm") / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{os.environ.get('RANK', '0')}"
    name.unlink(missing_ok=True)


def share_cpu_threads(local_world_size: int) -> None:
    """On CPU, give each local rank its share of the cores instead of every rank using all of them."""
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world_size)))
