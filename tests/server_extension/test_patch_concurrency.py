"""Two applies to the same files never interleave: one wins, the other gets 409."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Any

from codeyard.server_extension.audit import AuditLog
from codeyard.server_extension.errors import CodeyardError
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import WorkspacePaths

ORIGINAL = b"".join(b"original %d\n" % i for i in range(40))


def rewritten(tag: str) -> bytes:
    return b"".join(b"%s %d\n" % (tag.encode(), i) for i in range(40))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_concurrent_applies_to_one_file_one_wins(api, workspace: Path, git_diff) -> None:
    for round_ in range(4):
        (workspace / "f.txt").write_bytes(ORIGINAL)
        (workspace / "g.txt").write_bytes(ORIGINAL)
        before = {"f.txt": ORIGINAL, "g.txt": ORIGINAL}
        diffs = {
            tag: git_diff(before, {"f.txt": rewritten(tag), "g.txt": rewritten(tag)})
            for tag in (f"left{round_}", f"right{round_}")
        }
        base = {"f.txt": sha(ORIGINAL), "g.txt": sha(ORIGINAL)}
        results = await asyncio.gather(
            *(api("patch/apply", body={"diff": d, "base": base}) for d in diffs.values())
        )
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 409], results
        loser = next(body for status, body in results if status == 409)
        assert loser["error"] in ("base_mismatch", "hunk_failed")
        f, g = (workspace / "f.txt").read_bytes(), (workspace / "g.txt").read_bytes()
        assert f == g and f in {rewritten(tag) for tag in diffs}


async def test_concurrent_applies_without_base_still_do_not_mix(
    api, workspace: Path, git_diff
) -> None:
    (workspace / "f.txt").write_bytes(ORIGINAL)
    diffs = [git_diff({"f.txt": ORIGINAL}, {"f.txt": rewritten(t)}) for t in ("x", "y")]
    results = await asyncio.gather(*(api("patch/apply", body={"diff": d}) for d in diffs))
    assert sorted(s for s, _ in results) == [200, 409]
    assert (workspace / "f.txt").read_bytes() in (rewritten("x"), rewritten("y"))


def test_many_threads_racing_one_file_exactly_one_wins(tmp_path: Path, git_diff) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "f.txt").write_bytes(ORIGINAL)
    manager = PatchManager(
        WorkspacePaths(root), root / ".codeyard", AuditLog(tmp_path / "audit.jsonl")
    )
    tags = [f"thread{i}" for i in range(8)]
    diffs = {t: git_diff({"f.txt": ORIGINAL}, {"f.txt": rewritten(t)}) for t in tags}
    barrier = threading.Barrier(len(tags))
    outcomes: dict[str, Any] = {}

    def run(tag: str) -> None:
        barrier.wait()
        try:
            outcomes[tag] = manager.apply(diffs[tag], {"f.txt": sha(ORIGINAL)})
        except CodeyardError as exc:
            outcomes[tag] = exc.status

    threads = [threading.Thread(target=run, args=(t,)) for t in tags]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [t for t, o in outcomes.items() if isinstance(o, dict)]
    assert len(winners) == 1
    assert sorted(o for o in outcomes.values() if not isinstance(o, dict)) == [409] * 7
    assert (root / "f.txt").read_bytes() == rewritten(winners[0])
