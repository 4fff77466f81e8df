"""Benchmark: `POST patch/apply` of a 100-file patch against plain `git apply` of the same patch.

Both sides run in one run on identical copies of a generated repository. The endpoint side
goes through a real `jupyter server` on 127.0.0.1 with a token (HTTP, auth, staging, journal,
fsync, revert store, audit); each round is undone with `patch/{id}/revert`, untimed. The
baseline is `git apply` in a git checkout, undone with `git apply -R`, untimed.
Target (issue 2): apply / baseline <= 2.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from server import running_server

FILES = int(os.environ.get("BENCH_PATCH_FILES", "100"))
ROUNDS = int(os.environ.get("BENCH_PATCH_ROUNDS", "15"))


def source(i: int) -> str:
    return "".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(40))


def make_repo(root: Path) -> str:
    """FILES files in 10 folders, committed; returns a diff that edits every one of them."""
    for i in range(FILES):
        path = root / f"pkg{i % 10}" / f"mod{i:03}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source(i))
    git = ["git", "-C", str(root), "-c", "user.email=b@b", "-c", "user.name=b"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    for i in range(FILES):
        path = root / f"pkg{i % 10}" / f"mod{i:03}.py"
        text = path.read_text().replace("return x + 3\n", "return x * 3  # changed\n")
        path.write_text(text.replace("return x + 30\n", "return x - 30\n"))
    diff = subprocess.run([*git, "diff"], check=True, capture_output=True).stdout.decode()
    subprocess.run([*git, "checkout", "-q", "--", "."], check=True)
    return diff


def git_apply(root: Path, patch: Path, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run(["git", "-C", str(root), "apply", *extra, str(patch)], check=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws, base = Path(tmp, "workspace"), Path(tmp, "baseline")
        diff = make_repo(ws)
        make_repo(base)
        patch = Path(tmp, "change.patch")
        patch.write_text(diff)
        touched = diff.count("diff --git ")
        assert touched == FILES, touched
        apply_times, base_times = [], []
        with running_server(ws) as srv:
            # Warm-up, both sides.
            undo = srv.post("patch/apply", {"diff": diff})["patch_id"]
            srv.post(f"patch/{undo}/revert", {})
            git_apply(base, patch)
            git_apply(base, patch, "-R")
            for _ in range(ROUNDS):
                start = time.perf_counter()
                result = srv.post("patch/apply", {"diff": diff})
                apply_times.append(time.perf_counter() - start)
                assert len(result["files"]) == FILES
                srv.post(f"patch/{result['patch_id']}/revert", {})
                base_times.append(git_apply(base, patch))
                git_apply(base, patch, "-R")
            chain_ok = srv.get("audit", limit=1)["chain_ok"]
    a, b = statistics.median(apply_times), statistics.median(base_times)
    print(f"patch/apply endpoint ({FILES} files, {ROUNDS} rounds): median {a * 1000:.1f} ms")
    print(f"plain git apply, same patch:              median {b * 1000:.1f} ms")
    print(f"RATIO apply/git-apply = {a / b:.2f}  (target <= 2)   audit chain_ok={chain_ok}")


if __name__ == "__main__":
    main()
