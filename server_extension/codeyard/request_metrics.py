"""Per-endpoint request metrics shared by Codeyard's tornado apps that count every answer in
`on_finish`: the workspace API (`codeyard.server_extension.metrics`) and the placement
admin service (`codeyard.placement.service.metrics`).

Both count requests, errors and latency by the same bounded `endpoint` label (the handler's
class name, never the URL, so host names, user names, patch ids and paths cannot grow the
number of series); only the metric names, the help text, the errors' second label and the
latency buckets differ, so those are the arguments. Kept beside `codeyard.jsonapi` so both
apps' packages can import it from the one `codeyard` wheel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Histogram

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_names: dict[type, str] = {}


def endpoint_of(handler: Any) -> str:
    """`WorkspacePlaceHandler` -> `workspace_place`: bounded by the handler classes."""
    cls = type(handler)
    name = _names.get(cls)
    if name is None:
        base = cls.__name__.removesuffix("Handler") or cls.__name__
        name = _names[cls] = _CAMEL.sub("_", base).lower()
    return name


class EndpointMetrics:
    """`<prefix>_requests_total{endpoint,method,status}`,
    `<prefix>_errors_total{endpoint,<error_label>}` (answers of 400 and above) and
    `<prefix>_request_seconds{endpoint}` (request read to answer finished) in the process's
    default registry, described as the requests of `subject` ("workspace API")."""

    def __init__(
        self,
        prefix: str,
        subject: str,
        *,
        error_label: str,
        error_label_help: str,
        buckets: Sequence[float],
    ) -> None:
        title = subject[:1].upper() + subject[1:]
        self.requests = Counter(
            f"{prefix}_requests_total",
            f"{title} requests answered, by endpoint, method and HTTP status.",
            ["endpoint", "method", "status"],
        )
        self.errors = Counter(
            f"{prefix}_errors_total",
            f"{title} answers of 400 and above, by endpoint and {error_label_help}.",
            ["endpoint", error_label],
        )
        self.latency = Histogram(
            f"{prefix}_request_seconds",
            f"Seconds from reading a {subject} request to finishing its answer.",
            ["endpoint"],
            buckets=tuple(buckets),
        )

    def observe(self, handler: Any, error: str | None = None) -> tuple[str, int]:
        """Count one finished request (called from `on_finish`). `error` is the errors
        counter's label value for an answer of 400 and above, its status when None.
        Returns the endpoint and the status, for an app that counts more per endpoint."""
        endpoint = endpoint_of(handler)
        status = handler.get_status()
        self.requests.labels(endpoint, handler.request.method or "-", str(status)).inc()
        self.latency.labels(endpoint).observe(handler.request.request_time())
        if status >= 400:
            self.errors.labels(endpoint, error or str(status)).inc()
        return endpoint, status
