"""What a load run measured, and its two outputs: a table on stdout and an HTML page.

Every HTTP request a simulated user makes is one `Sample` (its kind, when, how long, and
how it ended). Three endings are kept apart because they mean different things: `ok`;
`backpressure`, an answer the system is designed to give under load (the model gateway's or
the Hub's 429, meaning "retry later"), which the load test reports but does not count as a
failure; and `failed`, with its cause, which the targets require to be zero.

The HTML page is one self-contained file (inline SVG, no script, no dependency) so it can be
opened from a CI artifact or mailed around.
"""

from __future__ import annotations

import html
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
BACKPRESSURE = "backpressure"
FAILED = "failed"
#: The Hub API requests that JupyterHub holds open while the spawn or stop runs.
WAITING_KINDS = frozenset(
    {"hub api: POST /users/{name}/servers/{ws}", "hub api: DELETE /users/{name}/servers/{ws}"}
)


@dataclass
class Sample:
    """One request: `kind` names what it did (e.g. "hub api: GET /user")."""

    kind: str
    t: float  # seconds since the run started, when the request was sent
    seconds: float
    outcome: str  # OK, BACKPRESSURE or FAILED
    cause: str = ""  # for FAILED: "HTTP 500", "ReadTimeout", ...


@dataclass
class Series:
    """A time series sampled during the run (Hub CPU, memory, routes, health latency)."""

    name: str
    unit: str
    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t: float, value: float) -> None:
        self.points.append((t, value))

    def values(self) -> list[float]:
        return [v for _, v in self.points]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Recorder:
    """Collects samples, phases and series for one run."""

    samples: list[Sample] = field(default_factory=list)
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # name, start, end
    series: dict[str, Series] = field(default_factory=dict)
    spawns: list[dict[str, Any]] = field(default_factory=list)  # user, host, seconds, ok
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def serie(self, name: str, unit: str) -> Series:
        if name not in self.series:
            self.series[name] = Series(name, unit)
        return self.series[name]

    def phase_of(self, t: float) -> str:
        for name, start, end in self.phases:
            if start <= t <= end:
                return name
        return "between phases"

    # ---- summaries -------------------------------------------------------------------
    def by_kind(self) -> list[dict[str, Any]]:
        """Per kind of request: counts by outcome and latency percentiles of the answered
        ones (ok and back-pressure both answered; failures may be timeouts)."""
        groups: dict[str, list[Sample]] = defaultdict(list)
        for s in self.samples:
            groups[s.kind].append(s)
        rows = []
        for kind in sorted(groups):
            group = groups[kind]
            answered = [s.seconds for s in group if s.outcome != FAILED]
            rows.append(
                {
                    "kind": kind,
                    "n": len(group),
                    "failed": sum(s.outcome == FAILED for s in group),
                    "backpressure": sum(s.outcome == BACKPRESSURE for s in group),
                    "p50_ms": 1000 * percentile(answered, 0.50),
                    "p95_ms": 1000 * percentile(answered, 0.95),
                    "p99_ms": 1000 * percentile(answered, 0.99),
                    "max_ms": 1000 * max(answered) if answered else math.nan,
                }
            )
        return rows

    def failures(self) -> Counter[str]:
        return Counter(f"{s.kind}: {s.cause}" for s in self.samples if s.outcome == FAILED)

    def backpressure(self) -> Counter[str]:
        return Counter(s.kind for s in self.samples if s.outcome == BACKPRESSURE)

    def health_by_phase(self) -> list[dict[str, Any]]:
        """/hub/health latency per phase of the run."""
        serie = self.series.get("hub health latency")
        if serie is None:
            return []
        groups: dict[str, list[float]] = defaultdict(list)
        for t, v in serie.points:
            groups[self.phase_of(t)].append(v)
        order = [p[0] for p in self.phases] + ["between phases"]
        return [
            {
                "phase": name,
                "n": len(groups[name]),
                "p50_ms": percentile(groups[name], 0.5),
                "p95_ms": percentile(groups[name], 0.95),
                "max_ms": max(groups[name]),
            }
            for name in order
            if groups.get(name)
        ]

    def hub_api_p95_ms(self, waiting: bool = True) -> float:
        """p95 over every call of the Hub's REST API (kinds starting with "hub api").
        `waiting=False` leaves out the spawn and stop requests, which JupyterHub holds open
        by design until the spawn or stop ends or its `slow_spawn_timeout` /
        `slow_stop_timeout` (10 s each by default) passes."""
        values = [
            s.seconds
            for s in self.samples
            if s.kind.startswith("hub api")
            and s.outcome != FAILED
            and (waiting or s.kind not in WAITING_KINDS)
        ]
        return 1000 * percentile(values, 0.95)

    def summary(self) -> dict[str, Any]:
        spawned = [s for s in self.spawns if s["ok"]]
        cpu = self.series.get("hub cpu")
        rss = self.series.get("hub rss")
        routes = self.series.get("proxy routes")
        return {
            "requests": len(self.samples),
            "failed": sum(s.outcome == FAILED for s in self.samples),
            "backpressure": sum(s.outcome == BACKPRESSURE for s in self.samples),
            "hub_api_p95_ms": self.hub_api_p95_ms(),
            "hub_api_p95_ms_without_spawn_stop": self.hub_api_p95_ms(waiting=False),
            "spawns_requested": len(self.spawns),
            "spawns_ready": len(spawned),
            "spawn_p50_s": statistics.median([s["seconds"] for s in spawned])
            if spawned
            else math.nan,
            "spawn_max_s": max((s["seconds"] for s in spawned), default=math.nan),
            "spawns_per_host": dict(Counter(s.get("host", "?") for s in spawned)),
            "hub_cpu_mean_pct": statistics.fmean(cpu.values()) if cpu and cpu.points else 0,
            "hub_cpu_max_pct": max(cpu.values(), default=0) if cpu else 0,
            "hub_rss_max_mib": max(rss.values(), default=0) if rss else 0,
            "proxy_routes_max": max(routes.values(), default=0) if routes else 0,
        }

    # ---- text -----------------------------------------------------------------------
    def table(self) -> str:
        out = []
        head = (
            f"{'request kind':34} {'n':>6} {'fail':>5} {'429':>5}"
            f" {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9}"
        )
        out += [head, "-" * len(head)]
        for r in self.by_kind():
            out.append(
                f"{r['kind'][:34]:34} {r['n']:>6} {r['failed']:>5} {r['backpressure']:>5}"
                f" {r['p50_ms']:>9.1f} {r['p95_ms']:>9.1f} {r['p99_ms']:>9.1f}"
                f" {r['max_ms']:>9.1f}"
            )
        out.append("")
        out.append(f"{'/hub/health during':34} {'n':>6} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
        for h in self.health_by_phase():
            out.append(
                f"{h['phase'][:34]:34} {h['n']:>6} {h['p50_ms']:>9.1f} {h['p95_ms']:>9.1f}"
                f" {h['max_ms']:>9.1f}"
            )
        out.append("")
        out += self.summary_lines()
        for key, value in self.notes.items():
            out.append(f"{key}: {value}")
        return "\n".join(out)

    def summary_lines(self) -> list[str]:
        s = self.summary()
        out = [
            f"requests {s['requests']}, failed {s['failed']}, back-pressure (429) "
            f"{s['backpressure']}; Hub API p95 {s['hub_api_p95_ms']:.0f} ms"
            f" ({s['hub_api_p95_ms_without_spawn_stop']:.0f} ms without the spawn and stop"
            " requests the Hub holds open)"
        ]
        out.append(
            f"spawns: {s['spawns_ready']}/{s['spawns_requested']} ready, p50 "
            f"{s['spawn_p50_s']:.1f} s, max {s['spawn_max_s']:.1f} s, per host "
            f"{s['spawns_per_host']}"
        )
        out.append(
            f"Hub process: CPU mean {s['hub_cpu_mean_pct']:.0f}% max {s['hub_cpu_max_pct']:.0f}%"
            f" (100% = one core), RSS max {s['hub_rss_max_mib']:.0f} MiB;"
            f" proxy routes max {s['proxy_routes_max']:.0f}"
        )
        if self.failures():
            out.append("failures by cause:")
            out += [f"  {n:>5}  {cause}" for cause, n in self.failures().most_common()]
        else:
            out.append("failures by cause: none")
        if self.backpressure():
            out.append("back-pressure (429, retried or reported, not failures):")
            out += [f"  {n:>5}  {kind}" for kind, n in self.backpressure().most_common()]
        return out

    # ---- HTML -----------------------------------------------------------------------
    def html(self, title: str) -> str:
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                if i == 0
                else f"<td class=n>{v:.1f}</td>"
                if isinstance(v, float)
                else f"<td class=n>{v}</td>"
                for i, v in enumerate(r.values())
            )
            + "</tr>"
            for r in self.by_kind()
        )
        health_rows = "".join(
            f"<tr><td>{html.escape(h['phase'])}</td><td class=n>{h['n']}</td>"
            f"<td class=n>{h['p50_ms']:.1f}</td><td class=n>{h['p95_ms']:.1f}</td>"
            f"<td class=n>{h['max_ms']:.1f}</td></tr>"
            for h in self.health_by_phase()
        )
        charts = []
        for name in ("hub health latency", "hub cpu", "hub rss", "proxy routes"):
            if name in self.series and self.series[name].points:
                charts.append(line_chart(self.series[name], self.phases))
        spawn_series = Series("spawn seconds (sorted)", "s")
        for i, sp in enumerate(sorted(s["seconds"] for s in self.spawns if s["ok"])):
            spawn_series.add(i + 1, sp)
        if spawn_series.points:
            charts.append(line_chart(spawn_series, [], x_label="spawn #"))
        latency = bar_chart(self.by_kind())
        notes = "".join(
            f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in self.notes.items()
        )
        failures = "".join(
            f"<li>{n} &times; {html.escape(c)}</li>" for c, n in self.failures().most_common()
        )
        return f"""<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>
<style>body{{font:14px sans-serif;margin:2em}}td,th{{padding:2px 8px}}.n{{text-align:right}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}svg{{margin:1em 0}}</style>
<h1>{html.escape(title)}</h1><ul>{notes}</ul>
<pre>{html.escape(chr(10).join(self.summary_lines()))}</pre>
<h2>Requests</h2><table><tr><th>kind</th><th>n</th><th>failed</th><th>429</th><th>p50 ms</th>
<th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>{rows}</table>
{latency}
<h2>/hub/health latency by phase</h2><table><tr><th>phase</th><th>n</th><th>p50 ms</th>
<th>p95 ms</th><th>max ms</th></tr>{health_rows}</table>
<h2>Failures</h2><ul>{failures or "<li>none</li>"}</ul>
<h2>Over time</h2>{"".join(charts)}
"""


PALETTE = ["#dbeafe", "#fde68a", "#d1fae5", "#fbcfe8", "#e9d5ff", "#fed7aa", "#e5e7eb"]


def line_chart(
    serie: Series,
    phases: list[tuple[str, float, float]],
    x_label: str = "seconds since start",
    width: int = 900,
    height: int = 220,
) -> str:
    """An SVG line chart of `serie`, with the run's phases as shaded, labelled bands."""
    pad_l, pad_b, pad_t = 60, 30, 24
    xs = [p[0] for p in serie.points]
    ys = [p[1] for p in serie.points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1e-9)
    y1 = max(max(ys), 1e-9) * 1.05
    w, h = width - pad_l - 10, height - pad_b - pad_t

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return pad_t + h - y / y1 * h

    bands = []
    for i, (name, start, end) in enumerate(phases):
        a, b = max(start, x0), min(end, x1)
        if b <= a:
            continue
        bands.append(
            f'<rect x="{sx(a):.1f}" y="{pad_t}" width="{sx(b) - sx(a):.1f}" height="{h}"'
            f' fill="{PALETTE[i % len(PALETTE)]}"/><text x="{sx(a) + 2:.1f}" y="{pad_t + 12}"'
            f' font-size="10">{html.escape(name)}</text>'
        )
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in serie.points)
    ticks = "".join(
        f'<text x="{pad_l - 4}" y="{sy(y1 * k / 4) + 4:.1f}" font-size="10"'
        f' text-anchor="end">{y1 * k / 4:.0f}</text>'
        for k in range(5)
    )
    return (
        f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="{pad_l}" y="14" font-weight="bold">{html.escape(serie.name)}'
        f" ({html.escape(serie.unit)})</text>{''.join(bands)}"
        f'<polyline fill="none" stroke="#1d4ed8" stroke-width="1.2" points="{path}"/>'
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#000"/>'
        f"{ticks}"
        f'<text x="{pad_l}" y="{height - 8}" font-size="10">{x0:.0f}</text>'
        f'<text x="{pad_l + w}" y="{height - 8}" font-size="10" text-anchor="end">'
        f"{x1:.0f} {html.escape(x_label)}</text></svg>"
    )


def bar_chart(rows: list[dict[str, Any]], width: int = 900) -> str:
    """Horizontal bars of p50/p95/p99 per kind of request, on a log scale (latencies span
    milliseconds for the Hub API to seconds for a spawn or the model)."""
    bar_h, gap, label_w = 6, 8, 260
    height = len(rows) * (3 * bar_h + gap) + 40
    top = max((r["p99_ms"] for r in rows if not math.isnan(r["p99_ms"])), default=1.0)
    lmax = math.log10(max(top, 10.0))

    def sx(ms: float) -> float:
        if math.isnan(ms) or ms <= 1:
            return 0.0
        return math.log10(ms) / lmax * (width - label_w - 20)

    parts = []
    y = 30
    for r in rows:
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 2 * bar_h}" font-size="11"'
            f' text-anchor="end">{html.escape(r["kind"])}</text>'
        )
        for i, (key, color) in enumerate(
            (("p50_ms", "#60a5fa"), ("p95_ms", "#f59e0b"), ("p99_ms", "#ef4444"))
        ):
            parts.append(
                f'<rect x="{label_w}" y="{y + i * bar_h}" width="{sx(r[key]):.1f}"'
                f' height="{bar_h - 1}" fill="{color}"/>'
            )
        y += 3 * bar_h + gap
    return (
        f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        '<text x="0" y="14" font-weight="bold">latency per kind, log scale'
        " (blue p50, amber p95, red p99; full width = "
        f"{10**lmax:.0f} ms)</text>{''.join(parts)}</svg>"
    )
