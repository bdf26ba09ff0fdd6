"""Debian programs the server tests need (sshd, pdsh, nginx, Chromium): found, installed with apt, or a skip.

One place for the install rule of the test suite: when a program is missing and we are root with apt-get,
`apt-get install` it (refreshing the package lists once if that fails), bounded in time and non-interactive;
otherwise the test skips with the reason. Never an error for a machine that cannot install.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

INSTALL_TIMEOUT_S = 900


def _apt(args: list[str]) -> subprocess.CompletedProcess | None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None


def require_programs(programs: dict[str, str], packages: list[str]) -> dict[str, str]:
    """Paths of `programs` (name -> command or absolute path), installing `packages` with apt when any is
    missing; skips the calling test with the reason when they cannot be had."""
    def found() -> dict[str, str | None]:
        return {name: shutil.which(path) for name, path in programs.items()}

    missing = [name for name, path in found().items() if path is None]
    if missing:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(f"needs {', '.join(missing)} (Debian packages {' '.join(packages)}); not root with apt-get "
                        "to install them")
        install = ["install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", "--no-install-recommends", *packages]
        done = _apt(install)
        if done is None or done.returncode != 0:
            _apt(["update", "-qq"])
            done = _apt(install)
        missing = [name for name, path in found().items() if path is None]
        if missing:
            detail = "timed out or could not start" if done is None else done.stderr[-500:]
            pytest.skip(f"{', '.join(missing)} still missing after `apt-get install {' '.join(packages)}`: {detail}")
    return {name: path for name, path in found().items() if path is not None}
