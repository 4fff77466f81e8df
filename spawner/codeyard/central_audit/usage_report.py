"""Usage per user, group and day, computed from the records the central audit holds.

Three sources, all already in the audit's tables, so usage needs no store of its own:

- the LLM gateway's records (`llm.<path>`, source `service/<gateway>`): tokens in (prompt)
  and out (completion) and requests by kind (the OpenAI path: `chat/completions`,
  `completions`);
- the workspaces' records: `llm.explain`, `llm.rewrite`, `patch.apply` (and `patch.cell`,
  a notebook cell's apply) and `patch.revert`;
- the Hub's `workspace.start` / `workspace.stop` records (`spawn_events`): a start runs until
  the next stop (or start) of the same workspace, or until now while it still runs; the hours
  are split at midnight UTC.

Days are UTC dates. Groups come from the Hub (`usage_groups`); a user in two groups counts in
both. Charts are inline SVG built here, so the page needs nothing from the network.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from sqlalchemy import or_, select

from .models import Record
from .store import AuditStore

DAY = 86400.0
WORKSPACE_COUNTS = {
    "llm.explain": "explain",
    "llm.rewrite": "rewrite",
    "patch.apply": "apply",
    "patch.cell": "apply",
    "patch.revert": "revert",
}
SPAWN_ACTIONS = ("workspace.start", "workspace.stop")
COUNT_COLUMNS = ("explain", "rewrite", "apply", "revert")
CSV_COLUMNS = (
    "day",
    "user",
    "group",
    "requests",
    "tokens_in",
    "tokens_out",
    *COUNT_COLUMNS,
    "workspace_hours",
    "requests_by_kind",
)


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


@dataclass
class Usage:
    """One user's (or group's) usage on one day."""

    tokens_in: int = 0
    tokens_out: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_COLUMNS, 0))
    workspace_seconds: float = 0.0

    def add(self, other: Usage) -> None:
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        for kind, n in other.requests.items():
            self.requests[kind] = self.requests.get(kind, 0) + n
        for name, n in other.counts.items():
            self.counts[name] += n
        self.workspace_seconds += other.workspace_seconds

    def row(self, day: str, user: str = "", group: str = "") -> dict[str, Any]:
        return {
            "day": day,
            "user": user,
            "group": group,
            "requests": sum(self.requests.values()),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            **self.counts,
            "workspace_hours": round(self.workspace_seconds / 3600, 6),
            "requests_by_kind": dict(sorted(self.requests.items())),
        }


def _split_by_day(start: float, end: float) -> Iterable[tuple[str, float]]:
    """(day, seconds) of the interval [start, end), cut at each midnight UTC."""
    while start < end:
        midnight = (int(start // DAY) + 1) * DAY
        cut = min(end, midnight)
        yield day_of(start), cut - start
        start = cut


def compute_usage(
    store: AuditStore,
    since: float,
    until: float,
    user: str | None = None,
    now: float | None = None,
) -> dict[tuple[str, str], Usage]:
    """(day, user) -> Usage for records with `since <= ts < until` (of `user` only if given)."""
    now = time.time() if now is None else now
    out: dict[tuple[str, str], Usage] = defaultdict(Usage)
    query: Any = select(Record.owner, Record.action, Record.ts, Record.body).where(
        or_(
            Record.action.like("llm.%"),
            Record.action.in_([*WORKSPACE_COUNTS, *SPAWN_ACTIONS]),
        ),
        Record.ts < until,
    )
    if user is not None:
        query = query.where(Record.owner == user)
    spans: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    with store.sessions() as db:
        for owner, action, ts, body in db.execute(query.execution_options(yield_per=1000)):
            if action in SPAWN_ACTIONS:
                record = json.loads(body)["record"]
                # A workspace that died ends when it was last seen running, not when the
                # Hub noticed (`spawn_events.record_died`).
                end = record.get("last_seen") if action == "workspace.stop" else None
                at = min(ts, float(end)) if isinstance(end, int | float) else ts
                spans[(owner, str(record.get("workspace") or ""))].append((ts, at, action))
                continue
            if ts < since:
                continue
            usage = out[(day_of(ts), owner)]
            if action in WORKSPACE_COUNTS:
                usage.counts[WORKSPACE_COUNTS[action]] += 1
                continue
            record = json.loads(body)["record"]
            if "prompt_tokens" not in record:
                continue  # an llm.* record that is not the gateway's
            kind = action[len("llm.") :]
            usage.requests[kind] = usage.requests.get(kind, 0) + 1
            usage.tokens_in += int(record.get("prompt_tokens") or 0)
            usage.tokens_out += int(record.get("completion_tokens") or 0)
    for (owner, _workspace), events in spans.items():
        for start, end in runs(events, min(now, until)):
            for day, seconds in _split_by_day(max(start, since), min(end, until)):
                out[(day, owner)].workspace_seconds += seconds
    return dict(out)


def runs(events: list[tuple[float, float, str]], open_end: float) -> Iterable[tuple[float, float]]:
    """(start, end) of each run of one workspace, from its start and stop records as
    (ts, at, action): `ts` when the Hub recorded it, `at` where a stop ends the run (for a
    workspace that died, when it was last seen running). A run with no stop after it lasts
    until `open_end`.

    The records are taken in the Hub's order (`ts`), not by `at`: a workspace that died
    before any poll saw it running was last seen by its own start, a moment before the Hub
    recorded that start, and ordered by `at` its stop would come first and the run would
    count on for ever. Its end is kept no earlier than its start.
    """
    ordered = sorted(events)
    for n, (_ts, start, action) in enumerate(ordered):
        if action != "workspace.start":
            continue
        end = ordered[n + 1][1] if n + 1 < len(ordered) else open_end
        yield start, max(start, end)


def by_group(
    usage: Mapping[tuple[str, str], Usage], groups: Mapping[str, list[str]]
) -> dict[tuple[str, str], Usage]:
    """(day, group) -> the sum of its members' usage. `groups` maps group -> members."""
    member_of: dict[str, list[str]] = defaultdict(list)
    for group, members in groups.items():
        for member in members:
            member_of[member].append(group)
    out: dict[tuple[str, str], Usage] = defaultdict(Usage)
    for (day, user), u in usage.items():
        for group in member_of.get(user, []):
            out[(day, group)].add(u)
    return dict(out)


def by_day(usage: Mapping[tuple[str, str], Usage]) -> dict[str, Usage]:
    out: dict[str, Usage] = defaultdict(Usage)
    for (day, _who), u in usage.items():
        out[day].add(u)
    return dict(out)


def days_between(since: float, until: float) -> list[str]:
    first = datetime.fromtimestamp(since, UTC).date()
    last = datetime.fromtimestamp(until - 1, UTC).date()
    days = []
    while first <= last:
        days.append(first.isoformat())
        first += timedelta(days=1)
    return days


def rows_of(
    usage: Mapping[tuple[str, str], Usage],
    groups_of: Mapping[str, list[str]] | None = None,
    *,
    group_rows: bool = False,
) -> list[dict[str, Any]]:
    """Table rows, by day then name. Per user rows name the user's groups in `group`."""
    rows = []
    for (day, name), u in sorted(usage.items()):
        if group_rows:
            rows.append(u.row(day, group=name))
        else:
            rows.append(u.row(day, user=name, group=" ".join((groups_of or {}).get(name, []))))
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                **row,
                "requests_by_kind": " ".join(
                    f"{k}={v}" for k, v in row["requests_by_kind"].items()
                ),
            }
        )
    return out.getvalue()


def bar_chart(
    title: str,
    days: list[str],
    series: list[tuple[str, str, list[float]]],
    *,
    width: int = 640,
    height: int = 180,
    unit: str = "",
) -> str:
    """An SVG of stacked bars per day: `series` is (label, colour, one value per day)."""
    left, bottom, top = 56, 34, 26
    plot_w, plot_h = width - left - 10, height - bottom - top
    totals = [sum(s[2][i] for s in series) for i in range(len(days))]
    peak = max(totals, default=0) or 1
    slot = plot_w / max(len(days), 1)
    bar = max(min(slot * 0.7, 40), 2)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" class="usage-chart">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#888"/>',
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">'
        f"{escape(_fmt(peak))}{escape(unit)}</text>",
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">0</text>',
    ]
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar) / 2
        y = float(top + plot_h)
        for label, colour, values in series:
            h = values[i] / peak * plot_h
            if h <= 0:
                continue
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(day)} {escape(label)}: '
                f"{escape(_fmt(values[i]))}{escape(unit)}</title></rect>"
            )
        if len(days) <= 16 or i % max(len(days) // 8, 1) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 14}" font-size="10" '
                f'text-anchor="middle">{escape(day[5:])}</text>'
            )
    legend_x = left
    for label, colour, _values in series:
        parts.append(
            f'<rect x="{legend_x}" y="{height - 12}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{height - 3}" font-size="11">{escape(label)}</text>'
        )
        legend_x += 24 + 7 * len(label)
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2f}"


def charts(usage: Mapping[tuple[str, str], Usage], days: list[str]) -> list[str]:
    """The page's charts over the selected users: tokens, activity and workspace-hours."""
    daily = by_day(usage)

    def series(pick: Any) -> list[float]:
        return [float(pick(daily[d])) if d in daily else 0.0 for d in days]

    return [
        bar_chart(
            "Tokens per day",
            days,
            [
                ("in (prompt)", "#4878a8", series(lambda u: u.tokens_in)),
                ("out (completion)", "#e0892b", series(lambda u: u.tokens_out)),
            ],
        ),
        bar_chart(
            "Explain, rewrite, apply, revert per day",
            days,
            [
                ("explain", "#6a9f58", series(lambda u: u.counts["explain"])),
                ("rewrite", "#d1605e", series(lambda u: u.counts["rewrite"])),
                ("apply", "#857aab", series(lambda u: u.counts["apply"])),
                ("revert", "#a2a2a2", series(lambda u: u.counts["revert"])),
            ],
        ),
        bar_chart(
            "Workspace-hours per day",
            days,
            [("hours", "#2a9d8f", series(lambda u: u.workspace_seconds / 3600))],
            unit=" h",
        ),
    ]
