"""Who is in the run, and who is gone: the roster of ranks (host, process, how it was started) and the
roll call that names the ranks a failed collective lost.

A collective that fails because a node died says only that a socket closed ("Connection reset by peer",
with an address) or that it timed out. Every rank that catches such a failure answers a roll call on the
rendezvous store (hosted by rank 0's process); the ranks that do not answer within a few seconds are the
lost ones, and the roster gathered at start-up says which host and process each of them was.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from typing import Any

import torch.distributed as dist

ROLL_CALL = "snps3/alive"


class LostRanksError(RuntimeError):
    """Some ranks stopped answering: the run cannot continue; the message names them."""


def describe_rank(rank: int) -> dict[str, Any]:
    """This process: its host, pid, network namespace and, when ssh started it, the ssh connection
    (`client_ip client_port server_ip server_port`), so a run's roster shows how every rank was reached."""
    try:
        netns = os.readlink("/proc/self/ns/net")
    except OSError:
        netns = None
    return {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(), "ssh": os.environ.get("SSH_CONNECTION"),
            "netns": netns}


def roll_call(rank: int, world_size: int, wait_s: float) -> list[int] | None:
    """The ranks that did not answer within wait_s (this one answers first); None when the rendezvous store
    itself cannot be reached, i.e. rank 0's process is gone."""
    store = _default_store()
    if store is None:
        return None
    try:
        store.set(f"{ROLL_CALL}/{rank}", "1")
    except Exception:  # noqa: BLE001 - any store failure means its host (rank 0) is unreachable
        return None
    missing, deadline = [], time.monotonic() + wait_s
    for other in range(world_size):
        try:
            store.wait([f"{ROLL_CALL}/{other}"], timedelta(seconds=max(0.1, deadline - time.monotonic())))
        except Exception:  # noqa: BLE001 - a timeout: that rank did not answer
            missing.append(other)
    return missing


def lost_ranks_message(missing: list[int] | None, roster: list[dict[str, Any]], error: BaseException,
                       wait_s: float) -> str:
    """One paragraph: which ranks (hosts, pids) are gone and the collective error that revealed it."""
    by_rank = {r["rank"]: r for r in roster}
    if missing is None:
        first = by_rank.get(0, {"host": "?"})
        who = f"rank 0 (host {first['host']}, which holds the rendezvous store) is unreachable"
    else:
        names = ", ".join(f"rank {r} (host {by_rank.get(r, {}).get('host', '?')}, pid {by_rank.get(r, {}).get('pid', '?')})"
                          for r in missing)
        who = f"lost {names}: it did not answer a roll call of the surviving ranks within {wait_s:.0f} s"
    detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    return f"{who}. The collective failed with {type(error).__name__}: {detail}"


def is_collective_failure(error: BaseException) -> bool:
    """Whether an exception came out of a collective (gloo/NCCL transport, a timeout, the store), the way a
    lost peer shows itself, rather than from this rank's own code."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(mark in text for mark in (
        "gloo", "NCCL", "Connection reset", "Connection closed", "Connection refused", "Broken pipe", "Timed out",
        "timed out"))


def lost_ranks_error(error: BaseException, roster: list[dict[str, Any]], rank: int, world_size: int, wait_s: float,
                     last_checkpoint: str | None) -> LostRanksError | None:
    """A LostRanksError naming the ranks that no longer answer, when a collective failure lost some; None
    when everyone answered (the error is someone's own, and stands as it is)."""
    if world_size == 1 or not is_collective_failure(error):
        return None
    missing = roll_call(rank, world_size, wait_s)
    if missing == []:
        return None
    where = f"the last complete checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint is complete yet"
    return LostRanksError(f"rank {rank}: {lost_ranks_message(missing, roster, error, wait_s)}. Stopping: {where}; "
                          f"start the same command with --resume auto once the hosts are back (or on the hosts "
                          f"left: the run resumes on another number of ranks)")


def _default_store():
    """The rendezvous store of the default process group (torch keeps it private), or None."""
    if not dist.is_available() or not dist.is_initialized():
        return None
    getter = getattr(dist.distributed_c10d, "_get_default_store", None)
    try:
        return getter() if getter else None
    except Exception:  # noqa: BLE001 - no default store (e.g. a group started without one)
        return None
