"""Benchmark: `GET tree` over a 50,000-file repository against `git ls-files` + one stat per file.

Both sides run in this process's run, on the same files, warm cache; the ratio is what counts.
Target: tree / baseline <= 1.5 (honouring .gitignore should cost little more than what git
itself does to list the files).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from results import record
from server import running_server

FILES = int(os.environ.get("BENCH_TREE_FILES", "50000"))
ROUNDS = 5


def make_repo(root: Path, n: int) -> None:
    """n files in a two-level layout (100 per folder), committed to git's index."""
    (root / ".gitignore").write_text("*.tmp\n")
    for i in range(n):
        folder = root / f"pkg{i // 5000:02}" / f"mod{(i // 100) % 50:02}"
        if i % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i:05}.py").write_text("x = 1\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)


def baseline(root: Path) -> float:
    start = time.perf_counter()
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z"], check=True, capture_output=True
    ).stdout
    for rel in out.split(b"\0"):
        if rel:
            os.stat(os.path.join(root, os.fsdecode(rel)))
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"generating {FILES} files ...", flush=True)
        make_repo(root, FILES)
        with running_server(root) as srv:
            srv.get("tree", depth=64, limit=100000)  # warm-up, both sides
            baseline(root)
            tree_times, base_times = [], []
            for _ in range(ROUNDS):
                start = time.perf_counter()
                raw = srv.call_raw("GET", "tree", depth=64, limit=100000)
                tree_times.append(time.perf_counter() - start)
                base_times.append(baseline(root))
        result = json.loads(raw)
        count = sum(1 for _ in _files(result["entries"]))
        assert count == FILES, f"tree listed {count} files, expected {FILES}"
    t, b = statistics.median(tree_times), statistics.median(base_times)
    print(f"tree endpoint ({FILES} files, depth 64): median {t * 1000:.0f} ms")
    print(f"git ls-files + stat per file:        median {b * 1000:.0f} ms")
    print(f"RATIO tree/baseline = {t / b:.2f}  (target <= 1.5)")
    record(
        "bench_tree",
        f"GET tree, {FILES} files <= 1.5x baseline",
        t * 1000,
        "ms",
        b * 1000,
        "git ls-files + stat",
        t / b <= 1.5,
    )


def _files(entries: list[dict]):
    for entry in entries:
        if entry["type"] == "directory":
            yield from _files(entry.get("children", []))
        else:
            yield entry


if __name__ == "__main__":
    main()
