"""One line per measured target, so that `make bench` can end with one table of them all.

A benchmark calls, once per target it measures:

    from results import record
    record("bench_workspace_cost", "single start <= 0.5x baseline", 3.1, "s",
           baseline=7.4, baseline_label="image of the start commit", met=3.1 <= 0.5 * 7.4)

Each call appends one JSON object (a line) to the file named by CODEYARD_BENCH_RESULTS, with
the load average at that moment: on a shared 2-core machine a figure means little without it.
When the variable is unset (a bench run by hand) the line is printed instead, so the bench
still shows what it would have recorded. tests/bench/summary.py reads the file back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV = "CODEYARD_BENCH_RESULTS"


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded: they go beside every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _append(entry: dict[str, Any]) -> None:
    """Append one line; O_APPEND keeps lines whole when two processes write at once."""
    line = json.dumps(entry, sort_keys=True) + "\n"
    path = os.environ.get(ENV)
    if not path:
        print(f"[bench result, {ENV} unset] {line}", end="", flush=True)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def record(
    bench: str,
    target: str,
    figure: float | None,
    unit: str,
    baseline: float | None,
    baseline_label: str,
    met: bool | None,
    note: str = "",
    load: float | None = None,
) -> None:
    """Record one target's figure beside its baseline from the same run.

    target names the target with its threshold (e.g. "idle memory <= 150 MiB"); figure and
    baseline share unit; baseline is None where the target is absolute and no baseline
    applies. figure is None when the bench could not measure it (a start that never became
    ready); that target is then recorded as missed. met is the caller's verdict, since only the
    bench knows which way a target points (lower is better, a ratio, a bound on all of several
    runs); None marks a figure kept beside its baseline that has no target of its own.
    load is the 1-minute load average when the figure was measured, for a bench that records
    at its end what it measured earlier; by default, the load average now.
    """
    loadavg = _load()
    if load is not None:
        loadavg[:1] = [round(load, 2)]
    ratio = figure / baseline if figure is not None and baseline else None
    _append(
        {
            "kind": "target",
            "time": time.time(),
            "bench": bench,
            "target": target,
            "figure": figure,
            "unit": unit,
            "baseline": baseline,
            "baseline_label": baseline_label,
            "ratio": ratio,
            "met": None if met is None else bool(met) and figure is not None,
            "note": note,
            "loadavg": loadavg,
        }
    )


def record_run(bench: str, seconds: float, status: int) -> None:
    """Record that a bench ran, for how long and with what exit status (the runner's part)."""
    _append(
        {
            "kind": "run",
            "time": time.time(),
            "bench": bench,
            "seconds": seconds,
            "status": status,
            "loadavg": _load(),
        }
    )
