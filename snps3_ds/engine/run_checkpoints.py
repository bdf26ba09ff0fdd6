"""Checkpoints a run can trust: complete only once every rank wrote, the last K kept, resume from the newest.

Layout (the engine writes its own files inside the tag folder; DeepSpeed also keeps `latest`):
    CHECKPOINTS/step_00000100/...            engine states (ZeRO partitions, or model_states.pt)
    CHECKPOINTS/step_00000100/rank_00001.pt  this rank's client state: data-stream position, RNG states
    CHECKPOINTS/step_00000100/COMPLETE       JSON written by rank 0 after a barrier: the tag is whole
A tag without COMPLETE (a crash or preemption while saving) is never resumed from and is removed later.
Checkpoints need a filesystem every rank can write and rank 0 can see (as DeepSpeed's own layout does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

COMPLETE = "COMPLETE"
_TAG = re.compile(r"^step_(\d+)$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def rank_file(folder: Path, rank: int) -> Path:
    return folder / f"rank_{rank:05d}.pt"


def write_rank_state(folder: Path, rank: int, state: dict[str, Any]) -> None:
    """Atomic per-rank write: a half-written file never carries the final name."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = rank_file(folder, rank).with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, rank_file(folder, rank))


def mark_complete(folder: Path, step: int, world_size: int) -> None:
    """Rank 0, after every rank finished writing (the caller's barrier)."""
    tmp = folder / (COMPLETE + ".tmp")
    tmp.write_text(json.dumps({"step": step, "world_size": world_size, "time": time.time()}))
    os.replace(tmp, folder / COMPLETE)


def complete_tags(root: Path) -> list[tuple[int, str]]:
    """(step, tag) of the complete checkpoints under root, oldest first."""
    if not Path(root).is_dir():
        return []
    found = []
    for child in Path(root).iterdir():
        match = _TAG.match(child.name)
        if match and (child / COMPLETE).is_file():
            found.append((int(match.group(1)), child.name))
    return sorted(found)


def newest_complete(root: Path) -> str | None:
    tags = complete_tags(root)
    return tags[-1][1] if tags else None


def read_complete(folder: Path) -> dict[str, Any]:
    return json.loads((folder / COMPLETE).read_text())


def prune(root: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` complete tags, and incomplete tags older than the newest complete one."""
    tags = complete_tags(root)
    if not tags:
        return []
    removed = [tag for _, tag in tags[:-keep]] if keep > 0 else []
    newest = tags[-1][0]
    for child in Path(root).iterdir():
        match = _TAG.match(child.name)
        if match and not (child / COMPLETE).is_file() and int(match.group(1)) < newest:
            removed.append(child.name)
    for tag in removed:
        shutil.rmtree(Path(root) / tag, ignore_errors=True)
    return removed


def resolve_resume(root: Path, resume: str | None) -> str | None:
    """`auto`: the newest complete tag or None (a fresh start); a tag name or a tag folder: that one, which
    must be complete; None/empty: no resume."""
    if not resume:
        return None
    if resume == "auto":
        return newest_complete(root)
    folder = Path(resume) if Path(resume).is_dir() else Path(root) / resume
    if not (folder / COMPLETE).is_file():
        raise FileNotFoundError(f"--resume {resume}: {folder} is not a complete checkpoint (no {COMPLETE} file); "
                                f"complete ones under {root}: {[t for _, t in complete_tags(root)]}")
    if folder.parent.resolve() != Path(root).resolve():
        raise ValueError(f"--resume {resume}: checkpoints are read from the run's folder {root}; "
                         f"pass a tag name or use train.run_dir")
    return folder.name
