"""Reading a workspace in tests without walking Codeyard's private state.

The state folder is left out of the walk, not filtered after it: a transaction answered a
moment ago is retired in the background, and its folders may vanish mid-walk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

STATE = ".codeyard"


def walk_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative POSIX path, path) of every file or symlink below `root`, outside `.codeyard/`."""
    for folder, dirs, files in os.walk(root):
        if folder == str(root):
            dirs[:] = [d for d in dirs if d != STATE]
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            yield path.relative_to(root).as_posix(), path


def files_of(root: Path) -> dict[str, bytes]:
    """Every regular file's bytes below `root`, outside Codeyard's state."""
    return {rel: p.read_bytes() for rel, p in walk_files(root) if p.is_file()}


def put(root: Path, files: dict[str, bytes]) -> None:
    """Write `files` (relative path -> bytes) below `root`, making folders as needed."""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
