"""Print one table of every target recorded in a `make bench` run, beside its baseline.

    python tests/bench/summary.py .artifacts/bench/<run>.jsonl

Reads the lines written by tests/bench/results.py. Each target shows its figure, the baseline
from the same run, their ratio, met or missed, and the 1-minute load average when it was
recorded (the machine is shared, so a missed target at load 8 says something different from
one at load 1). Then one line per bench with its duration and exit status, naming the benches
that failed or recorded no target, so a crash cannot pass for a short table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def read(path: Path) -> list[dict[str, Any]]:
    """The recorded lines; a torn last line (a bench killed mid-write) is skipped, not fatal."""
    entries: list[dict[str, Any]] = []
    if not path.exists():
        return entries
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{text} {unit}".strip()


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(entries: list[dict[str, Any]]) -> tuple[str, bool]:
    """The summary text, and whether every bench that ran exited 0."""
    targets = [e for e in entries if e.get("kind") == "target"]
    runs = [e for e in entries if e.get("kind") == "run"]
    out = []
    if targets:
        rows = [["bench", "target", "figure", "baseline", "ratio", "result", "load 1m", "note"]]
        for e in targets:
            load = e.get("loadavg") or []
            label = e.get("baseline_label") or ""
            base = _num(e.get("baseline"), e.get("unit", ""))
            rows.append(
                [
                    e["bench"].removeprefix("bench_"),
                    e["target"],
                    _num(e["figure"], e.get("unit", "")),
                    f"{base} ({label})" if label and e.get("baseline") is not None else base,
                    "-" if e.get("ratio") is None else f"{e['ratio']:.2f}",
                    "info" if e["met"] is None else "met" if e["met"] else "MISSED",
                    f"{load[0]:.1f}" if load else "-",
                    e.get("note", ""),
                ]
            )
        out.append(_table(rows))
    else:
        out.append("no target was recorded")
    ok = True
    if runs:
        with_targets = {e["bench"] for e in targets}
        rows = [["bench", "seconds", "exit", "load 1m", "targets"]]
        for r in runs:
            load = r.get("loadavg") or []
            count = sum(1 for e in targets if e["bench"] == r["bench"])
            rows.append(
                [
                    r["bench"],
                    f"{r['seconds']:.0f}",
                    "ok" if r["status"] == 0 else f"FAILED ({r['status']})",
                    f"{load[0]:.1f}" if load else "-",
                    str(count) if r["bench"] in with_targets else "0",
                ]
            )
        out.append("")
        out.append(_table(rows))
        total = sum(r["seconds"] for r in runs)
        out.append(f"total {total:.0f} s ({total / 60:.1f} min) over {len(runs)} benches")
        failed = [r["bench"] for r in runs if r["status"] != 0]
        if failed:
            ok = False
            out.append("FAILED: " + ", ".join(failed))
    met = sum(1 for e in targets if e["met"])
    missed = sum(1 for e in targets if e["met"] is False)
    out.append(f"targets: {met} met, {missed} missed, {len(targets) - met - missed} without one")
    return "\n".join(out), ok


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    text, ok = render(read(Path(argv[1])))
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
