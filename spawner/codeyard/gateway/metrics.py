"""Prometheus metrics of the gateway, in their own registry (not the process default).

Every label takes its values from a bounded set, whatever callers send, so no caller can
grow the number of series (and the scraper's memory) by sending made-up values:

- `user`: a JupyterHub user name once the Hub has vouched for the token (bounded by the
  Hub's users), else `-`;
- `model`: an allowed model name (`models.ModelCatalog`), `other` for any other name, `-`
  when the body was not read (no token, wrong path, unreadable body);
- `path`: one of the offered routes (`ROUTES`), else `other`;
- `status`, `reason`, `kind`, `stage`, `route`: values the gateway's own code chooses.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The routes the gateway forwards, the only values of the `path` and `route` labels
# besides `other`.
ROUTES = ("chat/completions", "completions", "models")
OTHER = "other"


def route_label(path: str) -> str:
    """`path` (below `/v1/`) if it is an offered route, else `other`."""
    return path if path in ROUTES else OTHER


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "codeyard_llm_requests",
            "Requests answered by the gateway, by final HTTP status.",
            ["user", "model", "path", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "codeyard_llm_tokens",
            "Tokens reported by the upstream, by kind (prompt or completion).",
            ["user", "model", "kind"],
            registry=self.registry,
        )
        self.charged = Counter(
            "codeyard_llm_charged_tokens",
            "Tokens charged against users' budgets: vLLM's usage when it reported one, the "
            "call's whole reservation (prompt estimate plus max_tokens) when the answer was "
            "cut short.",
            ["user", "model"],
            registry=self.registry,
        )
        self.errors = Counter(
            "codeyard_llm_errors",
            "Requests that failed, by reason (auth, forbidden, limit, upstream_down, ...).",
            ["user", "model", "reason"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "codeyard_llm_time_to_first_token_seconds",
            "Seconds from receiving a request to relaying the first byte of the answer.",
            ["user", "model"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.latency = Histogram(
            "codeyard_llm_request_seconds",
            "Seconds from receiving a request to the end of the answer.",
            ["user", "model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.overhead = Histogram(
            "codeyard_llm_gateway_overhead_seconds",
            "The gateway's own time per request, by stage: 'forward' from reading the request "
            "to having sent it to vLLM, 'first_chunk' from receiving vLLM's first chunk to "
            "having written it to the caller.",
            ["stage"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=self.registry,
        )
        self.upstream_connections = Counter(
            "codeyard_llm_upstream_connections",
            "TCP connections opened to vLLM. Idle ones are reused, so this grows far slower "
            "than the request count.",
            registry=self.registry,
        )
        self.upstream_requests = Counter(
            "codeyard_llm_upstream_requests",
            "Requests the gateway sent to vLLM, by route (including its own model-list "
            "lookups on `models`).",
            ["route"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "codeyard_llm_in_flight",
            "Requests being forwarded right now.",
            ["user"],
            registry=self.registry,
        )
