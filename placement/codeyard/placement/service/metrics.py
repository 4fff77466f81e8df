"""Prometheus metrics of the placement service, served at `<prefix>metrics`.

Every request passes through `observe` once (`BaseHandler.on_finish`), so no endpoint can
forget to count itself. Labels come from bounded sets only: `endpoint` is the handler's name
(`servers`, `workspace_place`, ...), never the URL with its host and user names.

- `codeyard_placement_requests_total{endpoint,method,status}`
- `codeyard_placement_errors_total{endpoint,status}`: answers of 400 and above
- `codeyard_placement_request_seconds{endpoint}`: latency, request read to answer finished
- `codeyard_placement_workspaces{server,state}`: the workspaces the registry places on each
  host, read from the registry at each scrape (`placements_text`), so it is right whichever
  process placed them (the Hub's spawner places; this service moves and pins)
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from codeyard.request_metrics import EndpointMetrics

REQUESTS = EndpointMetrics(
    "codeyard_placement",
    "placement service",
    error_label="status",
    error_label_help="status",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe(handler: Any) -> None:
    """Count one finished request (called from `on_finish`)."""
    REQUESTS.observe(handler)


def placements_text(placements: Iterable[dict[str, Any]]) -> bytes:
    """The `codeyard_placement_workspaces` gauge for the registry's current placements."""
    counts = Tally((p.get("server") or "-", p.get("state") or "-") for p in placements)
    registry = CollectorRegistry()
    gauge = Gauge(
        "codeyard_placement_workspaces",
        "Workspaces the registry places on each host, by placement state.",
        ["server", "state"],
        registry=registry,
    )
    for (server, state), n in counts.items():
        gauge.labels(server, state).set(n)
    return generate_latest(registry)
