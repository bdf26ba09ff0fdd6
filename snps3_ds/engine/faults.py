"""What keeps a many-rank run from hanging or silently diverging.

- StopSignal: SIGTERM/SIGINT only set a flag; the trainer stops at the next optimiser step boundary,
  after all ranks agreed (one tiny all_reduce per micro-step carries the flag), and saves first.
- Non-finite losses: the same all_reduce says whether any rank's loss is NaN/Inf; then every rank skips
  that micro-batch together, and rank 0 logs which term and which sample keys it was.
- Host preflight: right after the process group starts, before any other collective (DeepSpeed's
  broadcasts included), all ranks compare library versions, the code (a digest of the package sources)
  and the recipe + ds_config, so hosts set up differently fail at once with the odd hosts named instead
  of hanging; the gathered roster (host, pid, ssh connection of every rank) is kept for fault reports.
- Preflight: before the first step all ranks compare config, model structure and library versions, and
  report whether they have data, so a mismatch fails at once with the ranks named.
- verify_replicas: after training, every rank's parameters must be equal (data parallelism's invariant).
"""

from __future__ import annotations

import hashlib
import json
import platform
import signal
import socket
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from snps3_ds.distributed import gather_objects, tracked_batch_norms
from snps3_ds.engine.roster import describe_rank
from snps3_ds.tasks.base import TaskOutput

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class PreflightError(RuntimeError):
    """Ranks disagree on something that must be the same everywhere, or one of them has no data."""


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag (the first one); restores the previous handlers on close()."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.received: int | None = None
        self._previous = {}
        for sig in signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some test runners): no handler, no flag
                pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            print(f"received {signal.Signals(signum).name}: saving a checkpoint at the next step boundary", flush=True)
        self.received = signum

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def agree_any(flags: list[bool], world_size: int) -> list[bool]:
    """Per flag, whether it is set on any rank (one small all_reduce)."""
    if world_size == 1:
        return flags
    tensor = torch.tensor([float(f) for f in flags], dtype=torch.float32)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def nonfinite_terms(out: TaskOutput) -> list[str]:
    """Names of the non-finite loss terms (the total when it alone is bad); [] when the loss is finite.

    One host sync in the common case: the weighted total is finite exactly when every term it sums is,
    so the terms are looked at only when it is not."""
    if torch.isfinite(out.loss.detach()).all():
        return []
    bad = [name for name, value in out.losses.items() if not torch.isfinite(value.detach()).all()]
    return bad or ["loss"]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_structure(module: nn.Module) -> list[tuple[str, list[int], str]]:
    return [(name, list(p.shape), str(p.dtype)) for name, p in module.named_parameters()]


def library_versions() -> dict[str, str]:
    import deepspeed  # noqa: F401 - only the version is read; absent in plain-torch runs
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda),
            "deepspeed": getattr(deepspeed, "__version__", "?"), "transformers": transformers.__version__}


def code_revision(root: Path = PACKAGE_ROOT) -> dict[str, str]:
    """A digest of the package's Python sources (what must agree: edits count, README changes do not) and,
    for people, the git commit of the checkout when there is one."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    try:
        git = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip() or "none"
    except (OSError, subprocess.SubprocessError):
        git = "none"
    return {"sources": digest.hexdigest()[:16], "git": git}


def preflight_hosts(config: dict[str, Any], rank: int, world_size: int, versions: dict[str, str],
                    code: dict[str, str]) -> list[dict[str, Any]]:
    """The run's roster (describe_rank of every rank, with its versions and code); raises PreflightError on
    every rank when hosts differ in library versions, code or recipe + ds_config. Meant to be the first
    collective of a run, before anything a mismatch could make hang."""
    mine = {**describe_rank(rank), "versions": versions, "code": code, "config": _digest(config)}
    roster = gather_objects(mine, world_size)
    checks = (("library versions", lambda r: r["versions"]), ("code (snps3_ds sources)", lambda r: r["code"]["sources"]),
              ("recipe/ds_config", lambda r: r["config"]))
    problems = []
    for what, value in checks:
        if len({json.dumps(value(r), sort_keys=True) for r in roster}) > 1:
            detail = ", ".join(f"rank {r['rank']} ({r['host']}): {_shown(what, r)}" for r in roster)
            problems.append(f"hosts disagree on the {what}: {detail}")
    if problems:
        raise PreflightError("preflight failed before training started; set the hosts up alike (same "
                             "environment, checkout and files):\n  " + "\n  ".join(problems))
    return roster


def _shown(what: str, entry: dict[str, Any]) -> str:
    if what.startswith("code"):
        return f"{entry['code']['sources']} (git {entry['code'].get('git', 'none')})"
    if what.startswith("library"):
        return json.dumps(entry["versions"], sort_keys=True)
    return entry["config"]


def preflight(config: dict[str, Any], module: nn.Module, data_error: str | None, rank: int, world_size: int,
              versions: dict[str, str] | None = None) -> None:
    """Raise PreflightError on every rank when any rank differs or has no data; silent when all agree."""
    mine = {"rank": rank, "host": socket.gethostname(), "config": _digest(config),
            "model": _digest(model_structure(module)), "versions": versions or {}, "data_error": data_error}
    everyone = gather_objects(mine, world_size)
    problems = [f"rank {r['rank']} ({r['host']}): no training data: {r['data_error']}"
                for r in everyone if r["data_error"]]
    for field, what in (("config", "recipe/ds_config"), ("model", "model structure"), ("versions", "library versions")):
        if len({json.dumps(r[field], sort_keys=True) for r in everyone}) > 1:
            detail = ", ".join(f"rank {r['rank']} ({r['host']}): {r[field]}" for r in everyone)
            problems.append(f"ranks disagree on the {what}: {detail}")
    if problems:
        raise PreflightError("preflight failed; nothing was trained:\n  " + "\n  ".join(problems))


def parameter_fingerprint(module: nn.Module) -> str:
    """A hash of every parameter's bytes and of the BatchNorm running statistics (what evaluation reads
    besides the parameters): equal on all ranks iff the replicas are identical."""
    digest = hashlib.sha256()
    stats = [(f"{name}.{kind}", getattr(m, kind)) for name, m in tracked_batch_norms(module)
             for kind in ("running_mean", "running_var")]
    for name, tensor in [*module.named_parameters(), *stats]:
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def verify_replicas(module: nn.Module, rank: int, world_size: int) -> tuple[bool, list[str]]:
    """(identical, fingerprint per rank) after training."""
    prints = gather_objects(parameter_fingerprint(module), world_size)
    return len(set(prints)) == 1, prints
