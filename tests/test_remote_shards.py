"""Shards behind URLs, served by a real nginx on 127.0.0.1 (started here, its config written by the test):
training reads samples by range requests and resumes exactly as from local files, evaluation over HTTP equals
local, a dropped connection is retried then skipped and counted, a server that stays down stops the run with
a clear error. Select with `pytest -k remote_shards`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_RECIPE
from debian_packages import require_programs
from shard_factory import data_config
from snps3_ds.config import MaskingConfig, RemoteShardsConfig
from snps3_ds.data.errors import DataQualityError
from snps3_ds.data.loader import StreamPlacement, build_eval_loader, build_train_loader
from snps3_ds.data.stream.shards import resolve_shards
from snps3_ds.processes import free_port

FAST = RemoteShardsConfig(attempts=3, backoff_s=0.05, timeout_s=5.0, max_outage_s=30.0)
_LOG_FORMAT = "$request_method $uri $status $body_bytes_sent range=$http_range"


def _nginx_binary() -> str:
    """nginx from Debian, installed when missing (we are root in CI); a skip with the reason otherwise."""
    return require_programs({"nginx": "nginx"}, ["nginx"])["nginx"]


@dataclass
class Request:
    method: str
    uri: str
    status: int
    sent: int
    range: str


class Nginx:
    """nginx as a child process (daemon off) serving `root`: `/` (connections dropped, HTTP 444, while the flag
    file exists), `/slow/` (the same files at 48 KB/s) and `/failing/` (answers the shard list, the indexes and
    the size probe, drops every sample read)."""

    def __init__(self, root: Path, work: Path) -> None:
        self.binary, self.work, self.port = _nginx_binary(), work, free_port()
        self.flag, self.access_log = work / "down", work / "access.log"
        self.proc: subprocess.Popen | None = None
        for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (work / folder).mkdir(parents=True, exist_ok=True)
        temp = "\n".join(f"  {name}_temp_path {work / folder};" for name, folder in
                         (("client_body", "body"), ("proxy", "proxy"), ("fastcgi", "fastcgi"), ("uwsgi", "uwsgi"),
                          ("scgi", "scgi")))
        (work / "nginx.conf").write_text(f"""
{'user root;' if os.geteuid() == 0 else ''}
daemon off;
master_process on;
worker_processes 1;
pid {work / 'nginx.pid'};
error_log {work / 'error.log'} warn;
events {{ worker_connections 64; }}
http {{
  log_format probe '{_LOG_FORMAT}';
  access_log {self.access_log} probe;
{temp}
  server {{
    listen 127.0.0.1:{self.port};
    root {root};
    location / {{ if (-f {self.flag}) {{ return 444; }} }}
    location /slow/ {{ alias {root}/; limit_rate 48k; }}
    location /failing/ {{ alias {root}/; if ($http_range ~ "^bytes=[1-9]") {{ return 444; }} }}
  }}
}}
""")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.work / "nginx.conf"
        self.proc = subprocess.Popen([self.binary, "-p", str(self.work), "-e", str(self.work / "error.log"),
                                      "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"nginx exited: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"nginx did not listen on {self.url} within 10 s")

    def stop(self) -> None:
        """Fast shutdown (SIGTERM): open connections are closed on the spot."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def drop_connections(self, on: bool) -> None:
        if on:
            self.flag.touch()
        else:
            self.flag.unlink(missing_ok=True)

    def requests(self) -> list[Request]:
        rows = []
        for line in self.access_log.read_text().splitlines() if self.access_log.exists() else []:
            method, uri, status, sent, rng = line.split(" ", 4)
            rows.append(Request(method, uri, int(status), int(sent), rng.removeprefix("range=").strip("-")))
        return rows


@pytest.fixture(scope="module")
def nginx(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    server = Nginx(tiny_corpus, tmp_path_factory.mktemp("nginx"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(nginx: Nginx):
    """The module's nginx, up and serving at the start of the test and again at its end, whatever the test did."""
    nginx.drop_connections(False)
    if nginx.proc is None:
        nginx.start()
    yield nginx
    nginx.drop_connections(False)
    if nginx.proc is None:
        nginx.start()


def _train_batches(data, tokenizer, count: int, resume=None):
    loader = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 3), resume=resume)
    try:
        return [next(loader) for _ in range(count)], loader.state_dict()
    finally:
        loader.close()


def _same_batches(got, want) -> None:
    assert [b.keys for b in got] == [b.keys for b in want]
    for a, b in zip(got, want):
        assert torch.equal(a.frames, b.frames) and torch.equal(a.mlm_ids, b.mlm_ids)


def test_remote_shards_training_resumes_exactly_over_http(served: Nginx, tiny_corpus: Path, tokenizer) -> None:
    local, _ = _train_batches(data_config(train_shards=[str(tiny_corpus / "train")]), tokenizer, 6)
    before = len(served.requests())
    remote = data_config(train_shards=[f"{served.url}/train"], remote=FAST, num_workers=1)
    first, state = _train_batches(remote, tokenizer, 3)
    assert state["position"] == {"position": 6, "drawn": [6]}
    resumed, _ = _train_batches(data_config(train_shards=[f"{served.url}/train"], remote=FAST), tokenizer, 3, state)
    _same_batches(first + resumed, local)
    tars = [r for r in served.requests()[before:] if r.uri.endswith(".tar")]
    assert tars and all(r.status == 206 and r.range for r in tars), "every tar read is a range request"
    assert max(r.sent for r in tars) < min(p.stat().st_size for p in tiny_corpus.glob("train-*.tar")) // 4, \
        "samples are read one member at a time: no shard is downloaded whole"
    assert resolve_shards([f"{served.url}/train-{{000000..000002}}.tar"]) == resolve_shards([f"{served.url}/train"])


def _eval_samples(data, tokenizer) -> tuple[list[str], list[torch.Tensor], dict[str, float]]:
    loader = build_eval_loader(data, tokenizer, 3, 2)
    keys, frames = [], []
    for batch in loader:
        keys += batch.keys
        frames += list(batch.frames)
    return keys, frames, loader.stats()


def test_remote_shards_evaluation_over_http_equals_local(served: Nginx, tiny_corpus: Path, tokenizer) -> None:
    keys, frames, _ = _eval_samples(data_config(eval_shards=[str(tiny_corpus / "test")]), tokenizer)
    spec = f"{served.url}/test-{{000000..000000}}.tar"
    got_keys, got_frames, stats = _eval_samples(data_config(eval_shards=[spec], remote=FAST), tokenizer)
    assert got_keys == keys and len(keys) == 8 and stats["data/skipped"] == 0
    assert all(torch.equal(a, b) for a, b in zip(got_frames, frames))


def test_remote_shards_evaluation_picks_up_a_body_cut_mid_shard(served: Nginx, tiny_corpus: Path,
                                                                tokenizer) -> None:
    """nginx sends the test shard slowly and is stopped once the first batch is out (most of the shard still
    unsent), then started again: the stream asks for the rest from the byte it reached, and evaluation still
    equals local."""
    keys, frames, _ = _eval_samples(data_config(eval_shards=[str(tiny_corpus / "test")]), tokenizer)
    before = len(served.requests())
    patient = RemoteShardsConfig(attempts=6, backoff_s=0.1, timeout_s=5.0)
    loader = build_eval_loader(data_config(eval_shards=[f"{served.url}/slow/test"], remote=patient), tokenizer, 3, 2)
    stream = iter(loader)
    batches = [next(stream)]
    served.stop()
    restart = threading.Timer(0.3, served.start)
    restart.start()
    batches += list(stream)
    restart.join()
    assert [k for b in batches for k in b.keys] == keys and loader.stats()["data/skipped"] == 0
    assert all(torch.equal(a, b) for a, b in zip([f for b in batches for f in b.frames], frames))
    resumed = [r for r in served.requests()[before:] if r.uri == "/slow/test-000000.tar" and r.range]
    assert resumed and all(r.status == 206 and int(r.range.split("-")[0].removeprefix("bytes=")) > 0
                           for r in resumed), "the rest of the shard was asked for by a range request"


def test_remote_shards_dropped_connections_are_retried_then_skipped_and_counted(served: Nginx, tokenizer,
                                                                                caplog) -> None:
    data = data_config(train_shards=[f"{served.url}/train"], remote=FAST, max_skip_rate=1.0)
    loader = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 3))
    try:
        next(loader)
        before = len(served.requests())
        served.drop_connections(True)  # every request now gets its connection closed without an answer
        timer = threading.Timer(0.6, served.drop_connections, (False,))
        timer.start()
        batches = [next(loader) for _ in range(3)]
        timer.join()
        stats = loader.stats()
    finally:
        loader.close()
    assert all(len(b.keys) == 2 for b in batches), "skipped samples are replaced: batches stay whole"
    skipped, dropped = stats["data/skipped_remote"], sum(r.status == 444 for r in served.requests()[before:])
    assert skipped >= 1 and stats["data/skipped"] == skipped
    assert 3 * skipped <= dropped <= 3 * skipped + 2, "each skipped sample was tried 3 times (data.remote.attempts)"
    assert "connection closed without a response" in caplog.text and "try 2 of 3" in caplog.text


def test_remote_shards_a_server_that_stays_down_stops_with_the_skip_rate_error(served: Nginx, tokenizer) -> None:
    quick = RemoteShardsConfig(attempts=2, backoff_s=0.02, timeout_s=5.0, max_outage_s=1.0)
    data = data_config(train_shards=[f"{served.url}/train"], remote=quick, num_workers=1, max_skip_rate=0.3,
                       skip_rate_warmup=4)
    loader = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 3))
    try:
        for _ in range(2):
            next(loader)
        served.stop()
        began = time.monotonic()
        with pytest.raises(DataQualityError) as caught:
            for _ in range(200):
                next(loader)
        elapsed = time.monotonic() - began
    finally:
        loader.close()
    message = str(caught.value)
    assert "more than data.max_skip_rate=30.0%" in message and "'remote':" in message
    assert f"connection refused to {served.url}/train-" in message and "Traceback" not in message
    assert elapsed < 30, f"the stop took {elapsed:.0f} s"


def test_remote_shards_fsspec_schemes_and_a_missing_package(tiny_corpus: Path, tokenizer) -> None:
    """Other schemes go through fsspec: its in-memory filesystem stands in for object storage (a real fsspec
    filesystem, not a mock); s3:// without s3fs installed is refused naming the package."""
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in tiny_corpus.iterdir():  # the shards and their indexes (other tests add folders beside them)
        if path.is_file():
            memory.pipe_file(f"/remote_shards/{path.name}", path.read_bytes())
    local, _ = _train_batches(data_config(train_shards=[str(tiny_corpus / "train")]), tokenizer, 3)
    spec = "memory://remote_shards/train-{000000..000002}.tar"
    got, _ = _train_batches(data_config(train_shards=[spec], remote=FAST), tokenizer, 3)
    _same_batches(got, local)
    keys, _, _ = _eval_samples(data_config(eval_shards=[str(tiny_corpus / "test")]), tokenizer)
    assert _eval_samples(data_config(eval_shards=["memory://remote_shards/test"]), tokenizer)[0] == keys
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"s3://.*pip install s3fs"):
            _train_batches(data_config(train_shards=["s3://bucket/train-000000.tar"], remote=FAST), tokenizer, 1)


def test_remote_shards_training_run_whose_reads_fail_stops_without_a_traceback(served: Nginx, tiny_corpus: Path,
                                                                             tmp_path: Path) -> None:
    """The real entry point, against a server that answers start-up (the shard list, the indexes, the size
    probes) but drops every sample read: the run ends within a bounded time with exit code 1 and one error
    line naming the failure and the URL."""
    cmd = [sys.executable, "launch/pretrain.py", "--engine", "torch", "--config", str(TINY_RECIPE),
           "--ds_config", "ds_configs/tiny_fp32.json", f"data.train_shards=[{served.url}/failing/train]",
           f"data.eval_shards=[{tiny_corpus / 'test'}]", f"train.run_dir={tmp_path / 'run'}", "train.max_steps=3",
           "data.num_workers=1", "data.skip_rate_warmup=8", "data.max_skip_rate=0.2", "data.remote.attempts=2",
           "data.remote.backoff_s=0.01", "data.remote.max_outage_s=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the run did not stop within 240 s:\n{out[-2000:]}\n{err[-3000:]}")
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{out[-2000:]}\n{err[-3000:]}"
    assert "Traceback" not in out + err, err[-3000:]
    assert "DataQualityError: training data:" in err and "more than data.max_skip_rate=20.0%" in err, err[-3000:]
    assert f"connection closed without a response to {served.url}/failing/train-" in err, err[-3000:]
