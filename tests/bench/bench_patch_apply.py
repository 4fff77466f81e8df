"""Benchmark: `POST patch/apply` of a 100-file patch against plain `git apply` of the same patch.

Both sides run in one run on identical copies of a generated repository, interleaved round
by round so a load spike on this shared machine hits both. The endpoint side goes through
a real `jupyter server` on 127.0.0.1 with a token (HTTP, auth, staging, journal, fsync,
revert store, audit); each round is undone with `patch/{id}/revert`, untimed. The baseline
is `git apply` in a git checkout, undone with `git apply -R`, untimed.
Target: apply / baseline <= 2 (an atomic, audited apply may cost at most twice a bare
`git apply`), as the ratio of medians; the ratio of minimums (each side's best, least
disturbed round) and the median of per-round ratios are printed too.

Two series run on the same server. "settled": an untimed `sync` after every untimed undo,
so each timed operation starts with nothing dirty in the page cache and pays only for its
own writes. "unsettled": no sync, so the endpoint's one `syncfs` (its durability step, which
flushes the whole file system) also writes back what the untimed undo and the baseline's
`git apply` left dirty; this is what an apply pays on a host whose other workspaces write
to the same file system. `git apply` itself never syncs, so the sync only ever helps the
endpoint side; both figures are printed and the settled one is compared with the target.
Both run again with `CodeyardApp.flush_mode=fsync`, which fsyncs each file and folder the
patch wrote instead (on ext4 each fsync still commits the journal, other data included).

Each series also prints the server's own phase medians, read from the `Server-Timing`
header of each answer: `request` is the server's whole handling of the call, `worker` the
engine's time in its thread, the rest the engine's phases. The client keeps one keep-alive
connection, as a browser or the notebook client does.

An apply answers after one flush (the commit point); the flush that makes the swap durable
and retires the journal runs in the background after the answer, so the untimed revert
that follows may wait for it. Afterwards the same patch is applied in-process through
`PatchManager` (no HTTP), its phases read from the `Timings` passed to each call.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from results import record
from server import running_server

FILES = int(os.environ.get("BENCH_PATCH_FILES", "100"))
ROUNDS = int(os.environ.get("BENCH_PATCH_ROUNDS", "40"))


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


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{name:34s} median {statistics.median(ms):6.1f}  min {ms[0]:6.1f}  p90 {p90:6.1f} ms"


def in_process_phases(tmp: str, diff: str) -> None:
    """Apply through `PatchManager` directly and print the median of each phase."""
    from codeyard.server_extension.audit import AuditLog
    from codeyard.server_extension.patches.manager import PatchManager, Timings
    from codeyard.server_extension.paths import WorkspacePaths

    ws = Path(tmp, "inprocess")
    make_repo(ws)
    state = ws / ".codeyard"
    state.mkdir()
    manager = PatchManager(WorkspacePaths(ws), state, AuditLog(state / "audit.jsonl"))
    phases: dict[str, list[float]] = defaultdict(list)
    totals = []
    for _ in range(ROUNDS // 2 + 1):
        timings = Timings()
        start = time.perf_counter()
        result = manager.apply(diff, timings=timings)
        totals.append(time.perf_counter() - start)
        for phase, ms in timings.phases.items():
            phases[phase].append(ms)
        manager.revert(result["patch_id"])
    print(summary("in-process PatchManager.apply", totals[1:]))
    print(
        "  phase medians (ms): "
        + ", ".join(f"{k} {statistics.median(v[1:]):.1f}" for k, v in phases.items())
    )


Series = tuple[list[float], list[float], dict[str, list[float]]]


def series(srv: Any, diff: str, base: Path, patch: Path, settle: bool) -> Series:
    """ROUNDS interleaved rounds: timed endpoint apply, untimed revert, timed git apply,
    untimed `git apply -R`; with `settle`, an untimed sync after each undo."""
    apply_times, base_times = [], []
    phases: dict[str, list[float]] = defaultdict(list)
    for _ in range(ROUNDS):
        start = time.perf_counter()
        result = srv.post("patch/apply", {"diff": diff})
        apply_times.append(time.perf_counter() - start)
        for phase, ms in srv.server_timing().items():
            phases[phase].append(ms)
        assert len(result["files"]) == FILES
        srv.post(f"patch/{result['patch_id']}/revert", {})
        if settle:
            os.sync()
        base_times.append(git_apply(base, patch))
        git_apply(base, patch, "-R")
        if settle:
            os.sync()
    return apply_times, base_times, phases


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws, base = Path(tmp, "workspace"), Path(tmp, "baseline")
        diff = make_repo(ws)
        make_repo(base)
        patch = Path(tmp, "change.patch")
        patch.write_text(diff)
        touched = diff.count("diff --git ")
        assert touched == FILES, touched
        load_before = os.getloadavg()
        results = {}
        chain_ok = True
        for mode in ("syncfs", "fsync"):
            with running_server(ws, **{"CodeyardApp.flush_mode": mode}) as srv:
                # Warm-up, both sides.
                undo = srv.post("patch/apply", {"diff": diff})["patch_id"]
                srv.post(f"patch/{undo}/revert", {})
                git_apply(base, patch)
                git_apply(base, patch, "-R")
                results[f"{mode}, settled"] = series(srv, diff, base, patch, settle=True)
                results[f"{mode}, unsettled"] = series(srv, diff, base, patch, settle=False)
                chain_ok = chain_ok and srv.get("audit", limit=1)["chain_ok"]
        load_after = os.getloadavg()
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
        for name, (apply_times, base_times, phases) in results.items():
            a, b = statistics.median(apply_times), statistics.median(base_times)
            pairs = zip(apply_times, base_times, strict=True)
            paired = statistics.median(x / y for x, y in pairs)
            print(f"-- flush_mode={name} page cache")
            print(summary(f"patch/apply endpoint ({FILES} files)", apply_times))
            print(summary("plain git apply, same patch", base_times))
            target = ", target <= 2" if name == "syncfs, settled" else ""
            print(
                f"RATIO {name}: apply/git-apply = {a / b:.2f} (medians{target}); "
                f"mins {min(apply_times) / min(base_times):.2f}; per-round median {paired:.2f}; "
                f"{ROUNDS} rounds"
            )
            if name == "syncfs, settled":
                record(
                    "bench_patch_apply",
                    f"patch/apply, {FILES} files <= 2x baseline",
                    a * 1000,
                    "ms",
                    b * 1000,
                    "git apply, same patch",
                    a / b <= 2,
                    "syncfs, settled page cache",
                )
            print(
                "  server phase medians (ms): "
                + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in phases.items())
            )
        print(f"audit chain_ok={chain_ok}")
        in_process_phases(tmp, diff)


if __name__ == "__main__":
    main()
