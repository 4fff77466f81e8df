"""`CodeyardApp.flush_mode`: what each durability mode really asks of the kernel.

The patch engine runs in a child process under `strace -f -y -e trace=fsync,syncfs`, which
prints each fsync'd descriptor with its path, so these tests read the real system calls
instead of trusting the code's word. `syncfs` must make one call per step and no fsync of
workspace files; `fsync` must make no syncfs call and fsync every staged file, every revert
link and the folders whose names changed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from traitlets import TraitError

from codeyard.server_extension.app import CodeyardApp
from codeyard.server_extension.audit import AuditLog
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import WorkspacePaths

STRACE = shutil.which("strace") or "/usr/bin/strace"
FILES = ["pkg/a.py", "pkg/b.py", "top.py"]

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from codeyard.server_extension.audit import AuditLog
    from codeyard.server_extension.patches.manager import PatchManager
    from codeyard.server_extension.paths import WorkspacePaths

    root, mode, diff = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]).read_text()
    state = root / ".codeyard"
    state.mkdir()
    manager = PatchManager(
        WorkspacePaths(root), state, AuditLog(state / "audit.jsonl"), flush_mode=mode
    )
    print("MARK apply", flush=True)
    result = manager.apply(diff)
    print("MARK revert", flush=True)
    manager.revert(result["patch_id"])
    print("PATCH", result["patch_id"], flush=True)
    """
)


def _diff() -> str:
    return "".join(f"--- a/{f}\n+++ b/{f}\n@@ -1 +1 @@\n-old {f}\n+new {f}\n" for f in FILES)


def _traced(tmp_path: Path, mode: str) -> tuple[list[str], str]:
    if not Path(STRACE).exists():
        pytest.fail("strace is missing: apt-get install strace")
    root = tmp_path / "ws"
    for f in FILES:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text(f"old {f}\n")
    diff = tmp_path / "change.diff"
    diff.write_text(_diff())
    log = tmp_path / "strace.log"
    proc = subprocess.run(
        [STRACE, "-f", "-y", "-qq", "-e", "trace=fsync,syncfs", "-o", str(log),
         sys.executable, "-c", SCRIPT, str(root), mode, str(diff)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "PATCH" in proc.stdout, proc.stdout
    for f in FILES:
        assert (root / f).read_text() == f"old {f}\n"  # applied, then reverted
    return log.read_text().splitlines(), str(root)


def _fsynced(lines: list[str]) -> set[str]:
    return {m.group(1) for line in lines if (m := re.search(r"fsync\(\d+<([^>]*)>", line))}


def test_syncfs_mode_makes_one_syncfs_per_step_and_no_file_fsyncs(tmp_path: Path) -> None:
    lines, _root = _traced(tmp_path, "syncfs")
    calls = [line for line in lines if "syncfs(" in line]
    # apply: prepare + swap; revert: prepare + swap.
    assert len(calls) >= 4, lines
    staged = {p for p in _fsynced(lines) if "/work/" in p or "/old/" in p}
    assert not staged, f"syncfs mode fsynced staged files one by one: {sorted(staged)}"


def test_fsync_mode_never_syncfs_and_fsyncs_every_file_and_folder_it_wrote(
    tmp_path: Path,
) -> None:
    lines, root = _traced(tmp_path, "fsync")
    assert not [line for line in lines if "syncfs(" in line], lines
    synced = _fsynced(lines)
    for f in FILES:
        # the staged version (apply and revert), and the folder it is renamed into
        staged = [p for p in synced if p.endswith(f"/work/{f}")]
        assert len(staged) == 2, (f, sorted(synced))
        assert str(Path(root, f).parent) in synced, (f, sorted(synced))
    # the revert store's links to the old files (named by their index in the patch)
    links = [p for p in synced if re.search(r"/patches/[^/]+/old/\d+$", p)]
    assert len(links) == len(FILES), sorted(synced)
    assert f"{root}/.codeyard/patches" in synced  # the new patch folder is a name in it
    assert f"{root}/.codeyard/audit.jsonl" in synced


def test_flush_mode_is_validated(tmp_path: Path) -> None:
    with pytest.raises(TraitError, match="flush_mode must be one of"):
        CodeyardApp(flush_mode="sometimes")
    state = tmp_path / "state"
    state.mkdir()
    with pytest.raises(ValueError, match="flush_mode must be one of"):
        PatchManager(
            WorkspacePaths(tmp_path), state, AuditLog(state / "a.jsonl"), flush_mode="never"
        )
