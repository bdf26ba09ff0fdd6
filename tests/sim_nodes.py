"""Two simulated nodes on this machine, reached the way DeepSpeed reaches real ones: over ssh, with pdsh.

Each node is a network namespace of its own (the two joined by a veth pair named `mesh0` inside each, with
addresses 10.213.0.1 and 10.213.0.2 that exist only there) and a UTS namespace (hostname snps3-node-a/-b),
running its own `sshd` with a host key generated for the run. The launcher runs inside node A's namespace
(as a user logged into the first node would); an `ssh` wrapper first on its PATH points ssh (DeepSpeed's
reachability check, `hostname -I` and pdsh alike) at a client config with the run's key and known hosts,
so nothing under ~/.ssh is read or written. DeepSpeed's DS_ENV_FILE names the environment file the pdsh
runner exports on every node (the test's stand-in for ~/.deepspeed_env).

Everything started here is stopped in `close()`: every process in the two namespaces is SIGKILLed (bounded
retries), the namespaces are deleted (which deletes the veth pair) and the keys go with the temp folder.
Only the addresses inside these namespaces are ever contacted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from debian_packages import require_programs

from conftest import REPO
from launching import DEEPSPEED, launch_env

TOOLS = {"sshd": "/usr/sbin/sshd", "ssh": "ssh", "ssh-keygen": "ssh-keygen", "pdsh": "pdsh", "ip": "ip",
         "unshare": "unshare"}
PACKAGES = ["openssh-server", "openssh-client", "pdsh", "iproute2"]
SUBNET = "10.213.0"


@dataclass(frozen=True)
class Node:
    name: str  # hostname inside the node and its name in the hostfile
    netns: str  # network namespace
    address: str  # its address on mesh0

    @property
    def netns_id(self) -> str:
        """What /proc/PID/ns/net of a process in this node reads."""
        return f"net:[{os.stat(f'/run/netns/{self.netns}').st_ino}]"


def require_tools() -> None:
    """openssh-server and pdsh, installed with apt when missing (tests/debian_packages.py); then root for the namespaces."""
    require_programs(TOOLS, PACKAGES)
    if os.geteuid() != 0:
        pytest.skip("network namespaces and a second sshd need root")


def _sh(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


class SimulatedCluster:
    """Two ssh-reachable nodes (see the module doc); a context manager that always cleans up."""

    def __init__(self, folder: Path, ifname: str = "mesh0") -> None:
        self.folder, self.ifname = Path(folder), ifname
        tag = f"{os.getpid()}"
        self.nodes = [Node("snps3-node-a", f"snps3-{tag}-a", f"{SUBNET}.1"),
                      Node("snps3-node-b", f"snps3-{tag}-b", f"{SUBNET}.2")]
        self.veths = (f"s3a{tag}"[:15], f"s3b{tag}"[:15])
        self.sshd: dict[int, subprocess.Popen] = {}
        self.hostfile = self.folder / "hosts"
        self.env_file = self.folder / "deepspeed_env"

    def __enter__(self) -> "SimulatedCluster":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        require_tools()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._network()
        self._keys()
        self.hostfile.write_text("".join(f"{node.name} slots=1\n" for node in self.nodes))
        # DeepSpeed exports these on every node (and PYTHONPATH itself, with the launch folder first).
        self.env_file.write_text(f"GLOO_SOCKET_IFNAME={self.ifname}\nWANDB_MODE=disabled\nOMP_NUM_THREADS=1\n")
        for i in range(len(self.nodes)):
            self.start_sshd(i)

    def _network(self) -> None:
        for node in self.nodes:
            self._check(_sh("ip", "netns", "add", node.netns), f"ip netns add {node.netns}")
        a, b = self.veths
        self._check(_sh("ip", "link", "add", a, "type", "veth", "peer", "name", b), "ip link add (veth)")
        for node, veth in zip(self.nodes, self.veths):
            self._check(_sh("ip", "link", "set", veth, "netns", node.netns), f"ip link set {veth} netns")
            for args in (["link", "set", veth, "name", self.ifname], ["addr", "add", f"{node.address}/24", "dev",
                         self.ifname], ["link", "set", self.ifname, "up"], ["link", "set", "lo", "up"]):
                self._check(_sh("ip", "-n", node.netns, *args), f"ip -n {node.netns} {' '.join(args)}")

    def _keys(self) -> None:
        """A client key, one host key per node, and the client config, known hosts and ssh wrapper using them."""
        key = self.folder / "id_ed25519"
        self._check(_sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)), "ssh-keygen (client)")
        (self.folder / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
        known, hosts = [], []
        for node in self.nodes:
            host_key = self.folder / node.name / "ssh_host_ed25519_key"
            host_key.parent.mkdir(exist_ok=True)
            self._check(_sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)), "ssh-keygen (host)")
            kind, public = Path(f"{host_key}.pub").read_text().split()[:2]
            known.append(f"{node.name},{node.address} {kind} {public}\n")
            hosts.append(f"Host {node.name}\n  HostName {node.address}\n")
            (host_key.parent / "sshd_config").write_text(self._sshd_config(node, host_key))
        (self.folder / "known_hosts").write_text("".join(known))
        (self.folder / "ssh_config").write_text("".join(hosts) + (
            f"Host *\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile "
            f"{self.folder / 'known_hosts'}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
            f"  BatchMode yes\n  ConnectTimeout 5\n  LogLevel ERROR\n"))
        wrapper = self.folder / "bin" / "ssh"
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {self.folder / 'ssh_config'} \"$@\"\n")
        wrapper.chmod(0o755)

    def _sshd_config(self, node: Node, host_key: Path) -> str:
        return (f"Port 22\nListenAddress {node.address}\nHostKey {host_key}\nPidFile {host_key.parent / 'sshd.pid'}\n"
                f"AuthorizedKeysFile {self.folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
                f"PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                f"StrictModes no\nPrintMotd no\nPrintLastLog no\nUseDNS no\nMaxStartups 64\nMaxSessions 64\n")

    def start_sshd(self, index: int) -> None:
        """(Re)start node `index`'s sshd in its namespaces and wait (bounded) until node A can log in."""
        node = self.nodes[index]
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder (Debian)
        config = self.folder / node.name / "sshd_config"
        log = (self.folder / node.name / "sshd.log").open("ab")
        self.sshd[index] = subprocess.Popen(
            ["ip", "netns", "exec", node.netns, "unshare", "--uts", "sh", "-c",
             f"hostname {node.name} && exec {TOOLS['sshd']} -D -e -f {config}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.ssh(node.name, "true").returncode == 0:
                return
            if self.sshd[index].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"sshd of {node.name} did not come up:\n{(self.folder / node.name / 'sshd.log').read_text()}")

    def ssh(self, host: str, command: str) -> subprocess.CompletedProcess:
        """Run `command` on `host`, from node A, through the wrapper."""
        return _sh("ip", "netns", "exec", self.nodes[0].netns, str(self.folder / "bin" / "ssh"), host, command,
                   timeout=20)

    def env(self, **extra: str) -> dict[str, str]:
        """The launcher's environment: the ssh wrapper first on PATH, the env file DeepSpeed exports."""
        return launch_env(PATH=f"{self.folder / 'bin'}:{os.environ['PATH']}", DS_ENV_FILE=str(self.env_file), **extra)

    def launch(self, args: list[str]) -> subprocess.Popen:
        """`deepspeed ARGS` started on node A (from the repository root, as the mission writes it)."""
        return subprocess.Popen(["ip", "netns", "exec", self.nodes[0].netns, DEEPSPEED, *args], cwd=REPO,
                                env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def run(self, args: list[str], timeout: float = 600) -> tuple[int, str]:
        proc = self.launch(args)
        try:
            out = proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            self.kill_node(0)
            out = proc.communicate(timeout=30)[0]
            raise AssertionError(f"deepspeed did not finish in {timeout} s:\n{out[-5000:]}") from None
        return proc.returncode, out

    def pids(self, index: int) -> list[int]:
        found = _sh("ip", "netns", "pids", self.nodes[index].netns)
        return [int(p) for p in found.stdout.split()] if found.returncode == 0 else []

    def kill_node(self, index: int, timeout: float = 15) -> list[int]:
        """SIGKILL every process of node `index` (its sshd, sessions, launcher, ranks, workers) until none is
        left; returns the pids killed first."""
        first = self.pids(index)
        deadline = time.monotonic() + timeout
        while (pids := self.pids(index)) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for proc in self.sshd.values():
            if proc.poll() is not None:
                continue
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        return first

    def close(self) -> None:
        for index, node in enumerate(self.nodes):
            if Path(f"/run/netns/{node.netns}").exists():
                self.kill_node(index)
        for proc in self.sshd.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for node in self.nodes:
            _sh("ip", "netns", "del", node.netns)
        for veth in self.veths:  # only left in the root namespace when the setup stopped half-way
            if _sh("ip", "link", "show", veth).returncode == 0:
                _sh("ip", "link", "del", veth)
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def _check(done: subprocess.CompletedProcess, what: str) -> None:
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed: {done.stderr.strip() or done.stdout.strip()}")
