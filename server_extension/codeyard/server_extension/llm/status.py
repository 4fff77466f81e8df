"""Is the model up? One quick `GET /v1/models` through the gateway, for the panel to show.

The panel needs the model's name and the gateway's health before the user spends a minute
on a request that cannot succeed. The check uses the same URL and token as explain and
rewrite, so "healthy" means those calls can reach the model, with a short timeout
(`CodeyardLLM.status_timeout`) so a dead gateway is reported in seconds, not minutes.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypedDict

from tornado import httpclient
from tornado.simple_httpclient import HTTPTimeoutError

from ..errors import CodeyardError
from .client import CodeyardLLM


class Status(TypedDict):
    healthy: bool
    model: str
    latency_ms: float


def _down(code: str, message: str, model: str, latency_ms: float) -> CodeyardError:
    return CodeyardError(
        503, code, message, healthy=False, model=model, latency_ms=round(latency_ms, 1)
    )


async def gateway_status(llm: CodeyardLLM) -> Status:
    """`{"healthy": true, "model", "latency_ms"}`, or a 503 `CodeyardError` with the same
    fields (`healthy: false`) and a message that says what is wrong."""
    model = llm.model
    try:
        request = llm.request(
            None,
            endpoint="models",
            request_timeout=llm.status_timeout,
            connect_timeout=llm.status_timeout,
        )
    except CodeyardError as err:  # no URL or no token configured
        raise _down(err.code, err.message, model, 0.0) from None
    started = time.perf_counter()
    resp: httpclient.HTTPResponse | None = None
    error: BaseException | None = None
    try:
        fetched = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
    except (OSError, httpclient.HTTPClientError) as exc:
        error = exc
    else:
        resp = fetched
        error = fetched.error if fetched.code == 599 else None
    latency = (time.perf_counter() - started) * 1000
    if error is not None:
        if isinstance(error, HTTPTimeoutError):
            message = f"the LLM gateway did not answer within {llm.status_timeout:g} s"
            raise _down("llm_timeout", message, model, latency)
        message = (
            f"the LLM gateway at {llm.url} is not reachable ({error.__class__.__name__}); "
            "the shared model may be down or starting"
        )
        raise _down("llm_unavailable", message, model, latency)
    assert resp is not None
    if resp.code != 200:
        failure = llm._error(resp.code, resp.body or b"")
        raise _down(failure.code, f"{failure.message} (HTTP {resp.code})", model, latency)
    served = _served_models(resp.body or b"")
    if model not in served:
        names = ", ".join(sorted(served)) or "none"
        raise _down(
            "llm_model_missing",
            f"the gateway does not serve the model {model!r} (it serves: {names})",
            model,
            latency,
        )
    return {"healthy": True, "model": model, "latency_ms": round(latency, 1)}


def _served_models(raw: bytes) -> set[str]:
    try:
        data: Any = json.loads(raw)["data"]
        return {str(entry["id"]) for entry in data}
    except (ValueError, KeyError, TypeError):
        return set()
