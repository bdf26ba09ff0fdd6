"""RunLogger with W&B offline: the run's transaction log (run-*.wandb) is read back with wandb's own
protobuf Record, and every logged key, value, the config and the tags must be in it.

wandb 0.31 ships no Python reader for that file (its Go core reads it), so `_read_records` parses the
framing: a 7-byte header (":W&B", magic 0xBEE1, version), then LevelDB-log records in 32 KiB blocks,
each `crc32 (u32 LE) | length (u16 LE) | type (u8: 1 full, 2 first, 3 middle, 4 last)`, the CRC taken
over the type byte and the data with zlib's CRC-32.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import struct
import zlib
from pathlib import Path

import pytest

from snps3_ds.config import LoggingConfig, RunConfig
from snps3_ds.logging import RunLogger

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

BLOCK, HEADER = 32768, 7
ROWS = {
    1: {"train/loss": 2.5, "train/lr_default": 1e-4, "perf/samples_per_s": 31.5, "system/cpu_rss_gb": 1.25,
        "data/skipped_undecodable": 0},
    2: {"train/loss": 2.0, "train/lr_default": 2e-4, "perf/samples_per_s": 32.0, "data/skipped_undecodable": 3},
    3: {"val/demo_test/t2v/R@1": 12.5, "val/demo_test/t2v/MdR": 7.0},
}


def _offline_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only this test's settings: no credentials, no ~/.netrc or ~/.config, no git, nothing online."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))  # does not exist
    for name, value in {"MODE": "offline", "SILENT": "true", "DIR": str(tmp_path / "wandb_dir"),
                        "CACHE_DIR": str(tmp_path / "cache"), "CONFIG_DIR": str(tmp_path / "config"),
                        "DATA_DIR": str(tmp_path / "data"), "BASE_URL": "http://127.0.0.1:9",  # closed port
                        "DISABLE_GIT": "true", "DISABLE_CODE": "true", "_DISABLE_STATS": "true",
                        "_DISABLE_MACHINE_INFO": "true",
                        "ERROR_REPORTING": "false"}.items():  # no Sentry: the core starts with --no-observability
        monkeypatch.setenv(f"WANDB_{name}", value)
    monkeypatch.chdir(tmp_path)
    real_connect = socket.socket.connect

    def local_only(sock: socket.socket, address) -> None:  # the SDK talks to its core over a local socket only
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"wandb offline tried to reach {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)


def _read_records(path: Path) -> list:
    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, f"{path}: not a W&B log"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a record header is padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad CRC at byte {pos}"
        pending += chunk
        pos += HEADER + length
        if kind in (1, 4):  # full, or the last piece of a split record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _history(records: list) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {item.key or ".".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item}
            steps[record.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
    return steps


def test_offline_run_records_every_key_the_config_and_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline_environment(tmp_path, monkeypatch)
    wandb.teardown()  # a fresh SDK singleton, so it reads this environment
    run_dir = tmp_path / "run"
    cfg = LoggingConfig(project="snps3-test", run_name="offline-check", tags=["tiny", "offline"],
                        wandb_mode="offline")
    config = dataclasses.asdict(RunConfig(logging=cfg))
    try:
        logger = RunLogger(run_dir, cfg, config, enabled=True)
        for step, row in ROWS.items():
            logger.log(step, row)
        logger.close()
    finally:
        wandb.teardown()  # stop the core service this test started

    logs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1, f"expected one offline run under {run_dir / 'wandb'}, found {logs}"
    records = _read_records(logs[0])
    history = _history(records)
    assert set(history) == set(ROWS)
    for step, row in ROWS.items():
        assert history[step] == pytest.approx(row), step

    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.project, run.display_name, list(run.tags)) == ("snps3-test", "offline-check", ["tiny", "offline"])
    logged_config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert logged_config["model"] == config["model"] and logged_config["logging"]["tags"] == ["tiny", "offline"]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in line.items() if k not in ("step", "time")} for line in lines] == list(ROWS.values())
