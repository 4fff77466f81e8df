"""images/bin/clear-stale-pidfiles.sh, which ensure-docker.sh runs before it starts dockerd.

A dockerd killed outright leaves containerd's pid file; when the kernel later gives that pid
to another process, a new dockerd waits for a containerd that is not there and gives up
(seen in CI: "containerd is still running" pid=6409, then "timeout waiting for containerd to
start"). These tests use real processes in place of the engine's: a `sleep` holds a reused
pid, and a process whose /proc comm is `containerd` is a live one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "bin" / "clear-stale-pidfiles.sh"


def run(*specs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *specs], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def named_process(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose comm is `containerd` (a copy of sleep under that name)."""
    binary = tmp_path / "containerd"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    proc = subprocess.Popen([str(binary), "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_pid_reused_by_another_program_is_removed(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "300"])
    try:
        pidfile = tmp_path / "containerd.pid"
        pidfile.write_text(str(other.pid))
        result = run(f"{pidfile}:containerd")
        assert result.returncode == 0, result.stderr
        assert not pidfile.exists()
        assert f"pid '{other.pid}' is not a running containerd" in result.stderr
        assert other.poll() is None  # the other program is not touched
    finally:
        other.kill()
        other.wait()


def test_a_live_process_of_the_named_program_keeps_its_file(
    tmp_path: Path, named_process: subprocess.Popen[bytes]
) -> None:
    pidfile = tmp_path / "containerd.pid"
    pidfile.write_text(f"{named_process.pid}\n")
    result = run(f"{pidfile}:containerd")
    assert result.returncode == 0, result.stderr
    assert pidfile.read_text() == f"{named_process.pid}\n"
    assert result.stderr == ""


def test_a_dead_pid_garbage_or_an_empty_file_is_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    files = {"dead": str(gone.pid), "garbage": "12x\x00", "empty": ""}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run(*(f"{tmp_path / name}:dockerd" for name in files))
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == []


def test_a_missing_file_is_fine_and_a_malformed_argument_is_refused(tmp_path: Path) -> None:
    assert run(f"{tmp_path / 'absent.pid'}:dockerd").returncode == 0
    kept = tmp_path / "kept"
    kept.write_text("1")
    for bad in ("no-colon", ":dockerd", f"{kept}:"):
        result = run(f"{kept}:dockerd", bad)
        assert result.returncode == 2
        assert "expected FILE:COMM" in result.stderr
    assert kept.exists()  # pid 1 is not dockerd, but a refused call removes nothing
