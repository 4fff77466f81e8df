"""Run the named benchmarks one after another, timing each, for `make bench`.

    CODEYARD_BENCH_RESULTS=.artifacts/bench/r.jsonl python tests/bench/run_benches.py bench_tree

Every bench runs even when one before it fails, so that one crash does not hide the other
figures; each run's duration and exit status go to the results file (tests/bench/results.py)
for tests/bench/summary.py, and its output is also kept beside that file as <bench>.log.
The exit status is 1 when any bench failed, so `make bench` still fails on a crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from results import ENV, record_run

HERE = Path(__file__).resolve().parent


def run(bench: str, log_dir: Path | None) -> int:
    """Run one bench with its output both shown and logged; return its exit status."""
    print(f"==> {bench}", flush=True)
    start = time.monotonic()
    log = open(log_dir / f"{bench}.log", "wb") if log_dir else None  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(HERE / f"{bench}.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        for chunk in proc.stdout:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            if log:
                log.write(chunk)
        status = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    finally:
        if log:
            log.close()
    seconds = time.monotonic() - start
    record_run(bench, seconds, status)
    verdict = "ok" if status == 0 else f"FAILED ({status})"
    print(f"<== {bench}: {verdict} in {seconds:.0f} s", flush=True)
    return status


def main(benches: list[str]) -> int:
    results = os.environ.get(ENV)
    log_dir = None
    if results:
        log_dir = Path(results).with_suffix("")
        log_dir.mkdir(parents=True, exist_ok=True)
    failed = [b for b in benches if run(b, log_dir) != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
