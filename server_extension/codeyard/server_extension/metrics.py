"""Prometheus metrics of the workspace API, served at the server's own `/metrics`.

jupyter_server already serves `prometheus_client`'s default registry there (a token or login
is needed unless `authenticate_prometheus` is off); the collectors below join it. Every
Codeyard request passes through `observe` once, from `CodeyardHandler.on_finish`, so no
endpoint can forget to count itself.

Labels take values from bounded sets only: `endpoint` is the handler's name (`patch_apply`,
`explain`, ...), never the URL, so patch ids and paths cannot grow the number of series.

- `codeyard_server_requests_total{endpoint,method,status}`
- `codeyard_server_errors_total{endpoint,code}`: answers of 400 and above, by the API's error
  code (`not_found`, `conflict`, ...; `server_error` for a 500)
- `codeyard_server_request_seconds{endpoint}`: latency, request read to answer finished
- `codeyard_patch_bytes{kind}` and `codeyard_patch_changed_lines{kind}`: the size of each
  patch sent to `validate`/`apply` (`kind` `file` or `cell`), whatever its outcome
- `codeyard_patch_outcomes_total{operation,outcome}`: `apply`, `validate`, `revert`, `cell_apply`,
  `cell_validate` by `ok`, `refused` (4xx: a conflict, a stale base, a bad diff) or `error` (5xx)
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import Counter, Histogram

from codeyard.request_metrics import EndpointMetrics

REQUESTS = EndpointMetrics(
    "codeyard_server",
    "workspace API",
    error_label="code",
    error_label_help="error code",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PATCH_BYTES = Histogram(
    "codeyard_patch_bytes",
    "Size in bytes of each patch sent to validate or apply.",
    ["kind"],
    buckets=(100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000),
)
PATCH_LINES = Histogram(
    "codeyard_patch_changed_lines",
    "Lines each patch adds plus lines it removes.",
    ["kind"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000),
)
PATCH_OUTCOMES = Counter(
    "codeyard_patch_outcomes_total",
    "Patch operations by outcome: ok, refused (4xx) or error (5xx).",
    ["operation", "outcome"],
)

#: handler class -> (endpoint label, patch operation or None, patch kind or None)
_PATCH_ENDPOINTS = {
    "patch_validate": ("validate", "file"),
    "patch_apply": ("apply", "file"),
    "patch_revert": ("revert", None),
    "cell_validate": ("cell_validate", "cell"),
    "cell_apply": ("cell_apply", "cell"),
}


def _changed_lines(diff: str) -> int:
    return sum(
        1
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++ ", "--- "))
    )


def _patch_text(handler: Any) -> str | None:
    """The `diff` of a validate/apply request (files and cells alike); None when the body
    is not what those endpoints take."""
    try:
        body = json.loads(handler.request.body or b"null")
    except ValueError:
        return None
    value = body.get("diff") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def observe(handler: Any, error_code: str | None = None) -> None:
    """Count one finished request of a Codeyard handler (called from `on_finish`)."""
    status = handler.get_status()
    endpoint, _ = REQUESTS.observe(
        handler, error_code or ("server_error" if status >= 500 else "error")
    )
    patch = _PATCH_ENDPOINTS.get(endpoint)
    if patch is None:
        return
    operation, kind = patch
    outcome = "ok" if status < 400 else "refused" if status < 500 else "error"
    PATCH_OUTCOMES.labels(operation, outcome).inc()
    if kind is not None and handler.request.method == "POST":
        text = _patch_text(handler)
        if text is not None:
            PATCH_BYTES.labels(kind).observe(len(text.encode("utf-8", "surrogatepass")))
            PATCH_LINES.labels(kind).observe(_changed_lines(text))
