"""The mission's many-machine command on two simulated nodes (tests/sim_nodes.py: network namespaces, an sshd
each, keys made for the run), through DeepSpeed's default launcher: pdsh over ssh.

- `pytest -k hostfile`: `deepspeed --hostfile HOSTS launch/pretrain.py --ds_config ds_configs/zero2.json` trains
  on both nodes, checkpoints and ends with identical parameters; every rank must have come through ssh into
  its own node (the run's ranks.json records each rank's SSH_CONNECTION and network namespace).
- `pytest -k node_loss`: every process of node 1 is SIGKILLed after step 3; node 0 exits non-zero within 120 s
  naming the lost rank and host, the last complete checkpoint is intact, and `--resume auto` continues with
  the uninterrupted run's sample keys.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, tiny_overrides
from launching import global_batches, pretrain_args, read_jsonl
from sim_nodes import SimulatedCluster

STEPS = 14


def _assert_ranks_came_through_ssh(run_dir: Path, cluster: SimulatedCluster) -> None:
    roster = json.loads((run_dir / "ranks.json").read_text())
    assert [r["rank"] for r in roster] == [0, 1], roster
    for entry, node in zip(roster, cluster.nodes):
        assert entry["host"] == node.name, entry
        assert entry["netns"] == node.netns_id, f"rank {entry['rank']} did not run in {node.name}'s namespace: {entry}"
        assert entry["ssh"] and entry["ssh"].split()[2:] == [node.address, "22"], \
            f"rank {entry['rank']} was not started through ssh into {node.name}: SSH_CONNECTION={entry['ssh']!r}"


@pytest.mark.slow
def test_hostfile_the_mission_command_trains_on_two_ssh_nodes(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with SimulatedCluster(tmp_path / "cluster") as cluster:
        code, out = cluster.run(["--hostfile", str(cluster.hostfile), "launch/pretrain.py",
                                 "--ds_config", "ds_configs/zero2.json", "--config", str(TINY_RECIPE),
                                 *tiny_overrides(tiny_corpus, run_dir), "train.micro_batch_size=16", "train.max_steps=3",
                                 "data.num_workers=1"])
        assert code == 0, out[-6000:]
        assert "Using IP address of 10.213.0.1 for node snps3-node-a" in out, "master address found via ssh"
        assert "x world 2 = global batch 32" in out and "bf16, ZeRO stage 2" in out
        assert "parameters and BatchNorm statistics identical on all 2 ranks" in out
        tag = run_dir / "checkpoints" / "step_00000003"
        assert (tag / "COMPLETE").is_file() and {p.name for p in tag.glob("rank_*.pt")} == {"rank_00000.pt",
                                                                                          "rank_00001.pt"}
        _assert_ranks_came_through_ssh(run_dir, cluster)


def _wait_for_step(run_dir: Path, rank: int, step: int, proc, timeout: float = 300) -> None:
    trace = run_dir / "trace" / f"rank_{rank:05d}.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if trace.is_file() and any(r["step"] >= step for r in read_jsonl(trace)):
            return
        assert proc.poll() is None, f"training ended before step {step}:\n{proc.stdout.read()[-5000:]}"
        time.sleep(0.02)
    raise TimeoutError(f"rank {rank} did not reach step {step} in {timeout} s")


@pytest.mark.slow
def test_node_loss_stops_node_0_naming_the_lost_rank_and_resume_continues_the_stream(
        tiny_corpus: Path, tmp_path: Path, uninterrupted_run: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["--hostfile", None, "launch/pretrain.py",
            *pretrain_args(tiny_corpus, run_dir, f"train.max_steps={STEPS}", "train.checkpoint_every=2",
                           "train.collective_timeout_s=30")]
    with SimulatedCluster(tmp_path / "cluster") as cluster:
        args[1] = str(cluster.hostfile)
        proc = cluster.launch(args)
        try:
            _wait_for_step(run_dir, 1, 4, proc)  # rank 1 finished step 3 and began step 4
            killed_at = time.monotonic()
            cluster.kill_node(1)
            out = proc.communicate(timeout=150)[0]
            elapsed = time.monotonic() - killed_at
        finally:
            if proc.poll() is None:
                cluster.kill_node(0)
                proc.communicate(timeout=30)
        assert proc.returncode != 0 and elapsed < 120, (proc.returncode, elapsed, out[-5000:])
        named = re.search(r"rank 0: lost rank 1 \(host snps3-node-b, pid \d+\).*", out)
        assert named, out[-5000:]
        print(f"node 0 exited {elapsed:.1f} s after node 1 was killed: {named.group(0)}")
        tags = sorted(p.parent.name for p in (run_dir / "checkpoints").glob("step_*/COMPLETE"))
        assert tags and tags[-1] >= "step_00000002", tags
        saved = int(tags[-1].removeprefix("step_"))
        assert f"the last complete checkpoint is {tags[-1]}" in out

        cluster.start_sshd(1)  # the node is back
        code, resumed = cluster.run(args + ["--resume", "auto"])
        assert code == 0, resumed[-6000:]
        assert f"resuming from {run_dir / 'checkpoints' / tags[-1]}: step {saved}" in resumed
        _assert_ranks_came_through_ssh(run_dir, cluster)
    steps = {step: 2 for step in range(1, STEPS + 1)}
    want, got = global_batches(uninterrupted_run, steps), global_batches(run_dir, steps)
    later = [step for step in range(saved + 1, STEPS + 1)]
    assert later and all(got[step] == want[step] for step in later), [s for s in later if got[s] != want[s]]
    assert all(got[step] == want[step] for step in range(1, saved + 1)), "the steps before the loss, too"

