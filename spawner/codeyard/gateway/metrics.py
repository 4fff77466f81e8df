"""Prometheus metrics of the gateway, in their own registry (not the process default).

Every label takes its values from a bounded set, whatever callers send, so no caller can
grow the number of series (and the scraper's memory) by sending made-up values:

- `user`: a JupyterHub user name once the Hub has vouched for the token (bounded by the
  Hub's users), else `-`;
- `model`: an allowed model name (`models.ModelCatalog`), `other` for any other name, `-`
  when the body was not read (no token, wrong path, unreadable body);
- `path`: one of the offered routes (`ROUTES`), else `other`;
- `status`, `reason`, `kind`, `stage`, `route`: values the gateway's own code chooses.

Several processes (`GatewayApp.processes` > 1): each worker writes its values to files in a
shared folder (prometheus_client's multiprocess mode) and `/metrics`, whichever worker
answers it, reads them all and adds them up, so a scrape sees the whole gateway under the
same series as one process would show. No `pid` or worker label is added: the series set
stays the same however many workers run or restart. Counters and histograms of a worker
that died stay in the sums; the in-flight gauge counts live workers only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# The routes the gateway forwards, the only values of the `path` and `route` labels
# besides `other`.
ROUTES = ("chat/completions", "completions", "models")
OTHER = "other"


def route_label(path: str) -> str:
    """`path` (below `/v1/`) if it is an offered route, else `other`."""
    return path if path in ROUTES else OTHER


def reset_shared_folder(folder: str | os.PathLike[str]) -> None:
    """Empty (or make) the multiprocess folder; the supervisor does it before forking, so
    values of an earlier run are not added to this one's."""
    path = Path(folder)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def worker_gone(folder: str | os.PathLike[str], pid: int) -> None:
    """Drop a dead worker's live gauge values (its counters stay in the sums)."""
    mark_process_dead(pid, str(folder))


M = TypeVar("M", bound=MetricWrapperBase)


class Labelled(Generic[M]):
    """A labelled metric whose `labels(...)` children are kept by their label values.

    prometheus_client's `labels` converts and checks every value and takes a lock on each
    call; a forwarded call asks for about ten children, on the same event loop that relays
    every stream. Label values come from bounded sets (the module doc), so the children
    kept are the series that exist anyway. Everything else is the metric's own.
    """

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child

    def __getattr__(self, name: str) -> Any:
        return getattr(self.metric, name)


class GatewayMetrics:
    """The gateway's metrics; `shared_folder` turns on multiprocess mode (see above)."""

    def __init__(self, shared_folder: str | os.PathLike[str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        metric_registry: CollectorRegistry | None = self.registry
        if shared_folder is not None:
            # Values go to files in the folder (read at metric creation, so set it first);
            # the registry serves the sum over all files, and the metrics themselves are
            # registered nowhere, else this worker's values would be counted twice.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared_folder)
            values.ValueClass = values.MultiProcessValue()
            MultiProcessCollector(self.registry, path=str(shared_folder))
            metric_registry = None
        self._build(metric_registry)

    def _build(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> Labelled[Counter]:
            return Labelled(Counter(name, doc, labels, registry=registry))

        def histogram(
            name: str, doc: str, labels: list[str], buckets: tuple[float, ...]
        ) -> Labelled[Histogram]:
            return Labelled(Histogram(name, doc, labels, buckets=buckets, registry=registry))

        self.requests = counter(
            "codeyard_llm_requests",
            "Requests answered by the gateway, by final HTTP status.",
            ["user", "model", "path", "status"],
        )
        self.tokens = counter(
            "codeyard_llm_tokens",
            "Tokens reported by the upstream, by kind (prompt or completion).",
            ["user", "model", "kind"],
        )
        self.charged = counter(
            "codeyard_llm_charged_tokens",
            "Tokens charged against users' budgets: vLLM's usage when it reported one, the "
            "call's whole reservation (prompt estimate plus max_tokens) when the answer was "
            "cut short.",
            ["user", "model"],
        )
        self.errors = counter(
            "codeyard_llm_errors",
            "Requests that failed, by reason (auth, forbidden, limit, upstream_down, ...).",
            ["user", "model", "reason"],
        )
        self.ttft = histogram(
            "codeyard_llm_time_to_first_token_seconds",
            "Seconds from receiving a request to relaying the first byte of the answer.",
            ["user", "model"],
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.latency = histogram(
            "codeyard_llm_request_seconds",
            "Seconds from receiving a request to the end of the answer.",
            ["user", "model"],
            (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.overhead = histogram(
            "codeyard_llm_gateway_overhead_seconds",
            "The gateway's own time per request, by stage: 'forward' from reading the request "
            "to having sent it to vLLM, 'first_chunk' from receiving vLLM's first chunk to "
            "having written it to the caller.",
            ["stage"],
            (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
        )
        self.upstream_connections = Counter(
            "codeyard_llm_upstream_connections",
            "TCP connections opened to vLLM. Idle ones are reused, so this grows far slower "
            "than the request count.",
            registry=registry,
        )
        self.upstream_connections_warmed = Counter(
            "codeyard_llm_upstream_connections_warmed",
            "TCP connections opened to vLLM ahead of calls, to replace idle ones before vLLM's "
            "keep-alive closes them (GatewayApp.upstream_warm_seconds). Not in "
            "codeyard_llm_upstream_connections_total, which counts those calls had to open.",
            registry=registry,
        )
        self.upstream_requests = counter(
            "codeyard_llm_upstream_requests",
            "Requests the gateway sent to vLLM, by route (including its own model-list "
            "lookups on `models`).",
            ["route"],
        )
        self.hub_lookups = counter(
            "codeyard_llm_hub_token_lookups",
            "Token lookups the gateway made at the Hub, by when: 'on_call' a call waited for "
            "it (no fresh answer held by any worker), 'ahead' it renewed an answer in the "
            "background (GatewayApp.token_cache_seconds).",
            ["when"],
        )
        for when in ("on_call", "ahead"):  # both series exist from the start
            self.hub_lookups.labels(when)
        self.in_flight = Labelled(
            Gauge(
                "codeyard_llm_in_flight",
                "Requests being forwarded right now.",
                ["user"],
                registry=registry,
                multiprocess_mode="livesum",
            )
        )
