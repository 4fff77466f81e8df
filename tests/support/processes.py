"""Free ports, and starting, waiting for and stopping the real processes the suites drive."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, on `host` (the docker bridge for what containers
    must reach, loopback otherwise)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Return once `url` answers below 500; fail early if `proc`, which serves it, exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM to the process group of `proc` (started with `start_new_session=True`), as
    Ctrl-C reaches a whole foreground group; SIGKILL to the group after `timeout`."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def run_last_line(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """Run a project script and return its last stdout line (the scripts' output contract)."""
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return out.strip().splitlines()[-1]


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (a zombie not yet reaped counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _cgroup_folders(name: str) -> list[Path]:
    """The folders of top-level cgroup `name` and below in every mounted hierarchy (cgroup
    v1 or v2), deepest first."""
    found: list[Path] = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] in ("cgroup", "cgroup2"):
            top = Path(fields[1]) / name
            if top.is_dir():
                found += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda d: len(d.parts), reverse=True)


def kill_cgroup(name: str, wait: float = 10) -> None:
    """SIGKILL every process in top-level cgroup `name` and below, and remove its folders:
    the containers of a test's own dockerd (its `--cgroup-parent`), which outlive a dockerd
    that was killed."""
    groups = _cgroup_folders(name)
    for group in groups:
        with contextlib.suppress(OSError):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + wait
    for group in groups:
        while time.monotonic() < deadline:
            try:
                group.rmdir()  # refused until the killed processes are reaped
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
