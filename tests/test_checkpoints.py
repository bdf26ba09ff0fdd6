"""Checkpoint bookkeeping: only complete tags are resumed, the last K are kept, preflight names the odd rank."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from snps3_ds.config import ConfigError
from snps3_ds.engine.faults import PreflightError, preflight
from snps3_ds.processes import free_port
from snps3_ds.engine.run_checkpoints import complete_tags, mark_complete, prune, resolve_resume, tag_for


def _tags(root: Path, steps: list[int], complete: list[int]) -> None:
    for step in steps:
        (root / tag_for(step)).mkdir(parents=True)
        if step in complete:
            mark_complete(root / tag_for(step), step, 2)


def test_checkpoints_resume_auto_takes_the_newest_complete(tmp_path: Path) -> None:
    _tags(tmp_path, [10, 20, 30], complete=[10, 20])  # 30 was cut off while saving
    assert resolve_resume(tmp_path, "auto") == tag_for(20)
    assert resolve_resume(tmp_path, None) is None
    assert resolve_resume(tmp_path / "empty", "auto") is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(tmp_path, tag_for(30))


def test_checkpoints_prune_keeps_the_last_k_complete(tmp_path: Path) -> None:
    _tags(tmp_path, [10, 15, 20, 30, 40], complete=[10, 20, 30, 40])
    removed = prune(tmp_path, keep=2)
    assert sorted(removed) == [tag_for(10), tag_for(15), tag_for(20)]
    assert [t for _, t in complete_tags(tmp_path)] == [tag_for(30), tag_for(40)]


def _preflight_rank(rank: int, port: int, odd: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    width = 5 if odd == "model" and rank == 1 else 4
    config = {"lr": 2e-4 if odd == "config" and rank == 1 else 1e-4}
    error = "ShardSpecError: no shards" if odd == "data" and rank == 1 else None
    try:
        preflight(config, nn.Linear(width, 2), error, rank, 2)
    except PreflightError as err:
        Path(os.environ["PREFLIGHT_OUT"], f"rank{rank}.txt").write_text(str(err))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("odd, named", [("config", "recipe/ds_config"), ("model", "model structure"),
                                        ("data", "rank 1 .*no training data: ShardSpecError")])
def test_checkpoints_preflight_fails_on_every_rank_naming_the_odd_one(tmp_path: Path, odd: str, named: str) -> None:
    port = free_port()
    os.environ["PREFLIGHT_OUT"] = str(tmp_path)
    mp.spawn(_preflight_rank, args=(port, odd), nprocs=2)
    messages = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert messages[0] == messages[1]
    import re

    assert re.search(named, messages[0]), messages[0]


def test_checkpoints_fp16_on_cpu_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 is allowed")
    from snps3_ds.engine.ds_config import load_ds_config
    from snps3_ds.engine.torch_engine import TorchEngine
    from snps3_ds.config import OptimConfig
    from snps3_ds.processes import Processes

    settings = load_ds_config(Path(__file__).resolve().parents[1] / "ds_configs" / "zero2_fp16.json")
    with pytest.raises(ConfigError, match="zero2_fp16.json: fp16 needs a GPU"):
        TorchEngine(nn.Linear(2, 2), settings, OptimConfig(), 1, set(), Processes(0, 1, 1, torch.device("cpu")))


def _host_preflight_rank(rank: int, port: int, odd: str) -> None:
    from snps3_ds.engine.faults import preflight_hosts

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    versions = {"torch": "2.9" if odd == "versions" and rank == 1 else "2.8", "deepspeed": "0.19.8"}
    code = {"sources": "bbbb" if odd == "code" and rank == 1 else "aaaa", "git": f"rev{rank}"}
    config = {"recipe": {"lr": 2e-4 if odd == "recipe" and rank == 1 else 1e-4}}
    out = Path(os.environ["PREFLIGHT_OUT"], f"rank{rank}.txt")
    try:
        roster = preflight_hosts(config, rank, 2, versions, code)
        out.write_text(repr([(r["rank"], r["pid"], r["host"]) for r in roster]))
    except PreflightError as err:
        out.write_text(str(err))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("odd, named", [("versions", r"library versions: rank 0 \(.*\).*rank 1 \(.*\).*2\.9"),
                                        ("code", r"code \(snps3_ds sources\): .*rank 1 \(.*\): bbbb \(git rev1\)"),
                                        ("recipe", "recipe/ds_config"), ("none", r"\[\(0, \d+, .*\), \(1, \d+, ")])
def test_checkpoints_host_preflight_names_the_hosts_that_disagree(tmp_path: Path, odd: str, named: str) -> None:
    import re

    os.environ["PREFLIGHT_OUT"] = str(tmp_path)
    mp.spawn(_host_preflight_rank, args=(free_port(), odd), nprocs=2)
    messages = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert messages[0] == messages[1] and re.search(named, messages[0]), messages[0]
    assert ("hosts disagree" in messages[0]) == (odd != "none")


def _lost_rank(rank: int, port: int) -> None:
    import datetime

    from snps3_ds.engine.roster import describe_rank, lost_ranks_error

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20))
    roster = [describe_rank(0), {**describe_rank(1), "host": "node-b", "pid": 4242}]
    for step in range(100):
        if rank == 1 and step == 3:
            os._exit(9)  # as a killed node: its sockets close, nothing is reported
        try:
            torch.distributed.all_reduce(torch.ones(3))
        except RuntimeError as err:
            lost = lost_ranks_error(err, roster, rank, 2, 2.0, "step_00000002")
            Path(os.environ["PREFLIGHT_OUT"], "lost.txt").write_text(str(lost))
            os._exit(0)


def test_checkpoints_a_lost_rank_is_named_by_the_roll_call(tmp_path: Path) -> None:
    os.environ["PREFLIGHT_OUT"] = str(tmp_path)
    context = mp.spawn(_lost_rank, args=(free_port(),), nprocs=2, join=False)
    context.processes[0].join(60)
    for process in context.processes:
        if process.is_alive():
            process.kill()
    message = (tmp_path / "lost.txt").read_text()
    assert message.startswith("rank 0: lost rank 1 (host node-b, pid 4242): it did not answer a roll call"), message
    assert "the last complete checkpoint is step_00000002" in message and "--resume auto" in message


def _timeout_rank(rank: int, port: int) -> None:
    from snps3_ds.processes import shut_down, start_processes

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    start_processes(group=True, timeout_s=7)
    group = torch.distributed.new_group(ranks=[0])  # made later without a timeout, as DeepSpeed's ZeRO groups are
    timeout = group._get_backend(torch.device("cpu")).options._timeout
    Path(os.environ["PREFLIGHT_OUT"], "timeout.txt").write_text(str(timeout))
    shut_down(1)


def test_checkpoints_collective_timeout_bounds_groups_made_later(tmp_path: Path) -> None:
    os.environ["PREFLIGHT_OUT"] = str(tmp_path)
    mp.spawn(_timeout_rank, args=(free_port(),), nprocs=1)
    assert (tmp_path / "timeout.txt").read_text() == "0:00:07", "not torch's 30-minute default"
