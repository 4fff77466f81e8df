"""HTTP side of the gateway: check the caller, apply limits, relay to vLLM chunk by chunk.

A forwarded call goes: token (401/403) → route (404) → body (413, 400 for anything that
would fan out into several answers, `body_checks`) → model allow-list (404
`model_not_found`, `models`) → the token ledger's reservation (429, `accounting`) → vLLM.
When it ends, the ledger is settled with vLLM's usage, or with the whole reservation if the
answer was cut short; a caller that hangs up drops the upstream call at once.

Errors are `codeyard.jsonapi.JSONError`s answered in OpenAI's shape
`{"error": {"message", "type", "code"}}` (`jsonapi.openai_shape`), so the usual clients
(openai, litellm) show the message to the user.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import web
from tornado.iostream import StreamClosedError

from codeyard.jsonapi import JSONError, JSONHandlerMixin, openai_shape, parse_json_object

from .accounting import LimitExceeded, Reservation
from .answers import AnswerTally, prompt_digest
from .audit import AuditRow
from .body_checks import check_fan_out, reservation_tokens
from .metrics import route_label
from .models import OTHER, UNREAD
from .token_cache import TokenAnswer
from .upstream import Abort, UpstreamClosed, UpstreamRejected, UpstreamUnavailable

if TYPE_CHECKING:
    from .app import GatewayApp

# The only upstream endpoints a caller may reach. vLLM's --api-key guards /v1 only, and the
# other /v1 paths (tokenize, audio, embeddings, ...) are not part of our contract.
ALLOWED = {
    ("POST", "chat/completions"),
    ("POST", "completions"),
    ("GET", "models"),
}

_AUTH = re.compile(r"(?:token|bearer)\s+(\S+)", re.IGNORECASE)

# The `reason` label of `codeyard_llm_errors_total` for a refusal's error code, where the two
# differ; any other code is its own reason.
_REASONS = {"unauthorized": "auth", "request_too_large": "too_large"}

# Ways an answer can end early while vLLM was (or may have been) generating. Without a
# `usage` block nobody knows how far it got, so the call is charged its whole reservation.
_CUT_SHORT = {"client_gone", "upstream_timeout", "upstream_broken"}


def unreachable(exc: Exception) -> JSONError:
    """503 for a vLLM that cannot be reached, saying what to do about it."""
    return JSONError(
        503,
        "model_unavailable",
        "the model server (vLLM) is not reachable: it is down or still starting "
        f"({exc}). Try again in a minute; if it persists, ask an administrator to "
        "check the codeyard-llm service.",
    )


class RateLimited(JSONError):
    """429 from a per-user limit; `retry_after` (seconds) goes out as `Retry-After`."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(429, "rate_limited", message)
        self.retry_after = retry_after


class BaseHandler(JSONHandlerMixin, web.RequestHandler):
    error_shape = staticmethod(openai_shape)

    @property
    def gateway(self) -> GatewayApp:
        return self.settings["gateway"]  # type: ignore[no-any-return]

    def set_default_headers(self) -> None:
        # Which worker process answered: lets a test (or an operator reading a client's
        # trace) see how calls spread over `GatewayApp.processes`. A pid says nothing a
        # caller could use against the machine.
        self.set_header("X-Codeyard-Gateway-Pid", str(self.gateway.pid))

    def check_xsrf_cookie(self) -> None:
        # Token-authenticated API only; no cookies are ever accepted.
        return

    def send_json_error(self, err: JSONError) -> None:
        if isinstance(err, RateLimited):
            self.set_header("Retry-After", str(err.retry_after))
        super().send_json_error(err)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        err = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(err, RateLimited):
            self.set_header("Retry-After", str(err.retry_after))
        super().write_error(status_code, **kwargs)

    async def token_answer(self) -> TokenAnswer:
        """The Hub's answer about the caller's token (cached, `token_cache`), or 401."""
        match = _AUTH.match(self.request.headers.get("Authorization", ""))
        if not match:
            raise JSONError(
                401, "unauthorized", "send your JupyterHub token as 'Authorization: Bearer <token>'"
            )
        try:
            answer = await self.gateway.tokens.answer(match.group(1))
        except web.HTTPError as exc:
            raise JSONError(
                503, "hub_unavailable", f"cannot check the token with JupyterHub: {exc.log_message}"
            ) from None
        if not answer.user:
            raise JSONError(401, "unauthorized", "the token is not valid (expired or revoked?)")
        return answer

    async def authenticate(self) -> dict[str, Any]:
        """Return the Hub's model of the token's owner, or raise 401."""
        answer = await self.token_answer()
        assert answer.user is not None  # token_answer raised otherwise
        return answer.user


class ProxyHandler(BaseHandler):
    """Forwards one allowed call to vLLM and relays the answer as it arrives."""

    def initialize(self) -> None:
        self._client_gone = False
        self._abort_upstream: Any = None
        # The gateway's own cost, measured per request (see `_overhead`).
        self._sent_upstream_at: float | None = None
        self._first_chunk_s: float | None = None
        self._upstream_ttft_s: float | None = None
        self._new_connection = False

    def on_connection_close(self) -> None:
        self._client_gone = True
        # Stop vLLM now, not at its next chunk: the prompt may still be in prefill, or a
        # non-streamed answer may be minutes away.
        if self._abort_upstream is not None:
            self._abort_upstream()

    async def get(self, path: str) -> None:
        await self._handle("GET", path)

    async def post(self, path: str) -> None:
        await self._handle("POST", path)

    async def _handle(self, method: str, path: str) -> None:
        gw = self.gateway
        started = time.perf_counter()
        # Time since tornado read the request line: header and body parsing, routing.
        received = self.request.request_time()
        user_name, model = "-", UNREAD
        route = route_label(path)
        reservation: Reservation | None = None
        try:
            answer = await self.token_answer()
            assert answer.user is not None  # token_answer raised otherwise
            user_name = str(answer.user.get("name", "-"))
            if not answer.allowed:
                raise JSONError(
                    403,
                    "forbidden",
                    f"this token may not use the model: it needs one of the scopes "
                    f"{sorted(gw.required_scopes)}",
                )
            if (method, path) not in ALLOWED:
                raise JSONError(404, "not_found", f"{method} /v1/{path} is not offered here")
            body = self._checked_body(method, path)
            if body is not None:
                model = OTHER  # the label if the allow-list refuses the name
                model = await self._checked_model(body)
            try:
                cost = 0 if body is None else reservation_tokens(body)
                reservation = gw.ledger.reserve(user_name, cost)
            except LimitExceeded as exc:
                gw.metrics.errors.labels(user_name, model, exc.reason).inc()
                raise RateLimited(exc.message, exc.retry_after) from None
        except JSONError as err:
            if err.status != 429:
                reason = _REASONS.get(err.code, err.code)
                gw.metrics.errors.labels(user_name, model, reason).inc()
            gw.metrics.requests.labels(user_name, model, route, str(err.status)).inc()
            self.send_json_error(err)
            return
        assert reservation is not None  # every path above that did not reserve returned

        # Tokens are small writes: without TCP_NODELAY, Nagle's algorithm and the client's
        # delayed ACK hold each one back by up to 40 ms.
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.set_nodelay(True)
        gw.metrics.in_flight.labels(user_name).inc()
        tally = AnswerTally(streaming=bool(body and body.get("stream")))
        ttft: float | None = None
        status = 0
        error: str | None = None
        try:
            status, ttft, error = await self._relay(method, path, body, tally, started)
        finally:
            self._abort_upstream = None
            forward = None
            if self._sent_upstream_at is not None:
                forward = received + self._sent_upstream_at - started
                gw.metrics.overhead.labels("forward").observe(forward)
            if self._first_chunk_s is not None:
                gw.metrics.overhead.labels("first_chunk").observe(self._first_chunk_s)
            tally.finish()
            charged = self._charge(reservation, tally, error, ttft)
            gw.ledger.settle(reservation, charged)
            gw.metrics.in_flight.labels(user_name).dec()
            elapsed = time.perf_counter() - started
            labels = (user_name, model)
            gw.metrics.requests.labels(user_name, model, route, str(status)).inc()
            if charged:
                gw.metrics.charged.labels(*labels).inc(charged)
            if error:
                gw.metrics.errors.labels(*labels, error).inc()
            if ttft is not None:
                gw.metrics.ttft.labels(*labels).observe(ttft)
            gw.metrics.latency.labels(*labels).observe(elapsed)
            if tally.total_tokens:
                gw.metrics.tokens.labels(*labels, "prompt").inc(tally.prompt_tokens)
                gw.metrics.tokens.labels(*labels, "completion").inc(tally.completion_tokens)
            if body is not None:
                gw.audit.write(
                    AuditRow(
                        user=user_name,
                        model=model,
                        path=path,
                        status=status,
                        stream=tally.streaming,
                        prompt_tokens=tally.prompt_tokens,
                        completion_tokens=tally.completion_tokens,
                        charged_tokens=charged,
                        latency_ms=round(elapsed * 1000, 2),
                        ttft_ms=None if ttft is None else round(ttft * 1000, 2),
                        forward_ms=None if forward is None else round(forward * 1000, 3),
                        first_chunk_ms=None
                        if self._first_chunk_s is None
                        else round(self._first_chunk_s * 1000, 3),
                        upstream_ttft_ms=None
                        if self._upstream_ttft_s is None
                        else round(self._upstream_ttft_s * 1000, 3),
                        upstream_new_connection=self._new_connection,
                        pid=gw.pid,
                        prompt_sha256=prompt_digest(body),
                        answer_sha256=tally.answer_sha256,
                        error=error,
                    )
                )
        # Finish only now, so a call's audit row exists by the time its caller has the answer.
        if not self._finished:
            self.finish()

    def _charge(
        self,
        reservation: Reservation,
        tally: AnswerTally,
        error: str | None,
        ttft: float | None,
    ) -> int:
        """What the call costs its user: vLLM's usage when it reported one; the whole
        reservation when the answer was cut short after vLLM got the call; else nothing."""
        if tally.total_tokens:
            return tally.total_tokens
        if self._sent_upstream_at is None or error not in _CUT_SHORT:
            return 0
        if error == "upstream_broken" and ttft is None:
            return 0  # vLLM closed the connection before answering: it generated nothing
        return reservation.tokens

    async def _checked_model(self, body: dict[str, Any]) -> str:
        """The allowed model the body asks for, or 404 `model_not_found` (vLLM not asked)."""
        gw = self.gateway
        try:
            names = await gw.models.allowed()
        except UpstreamUnavailable as exc:
            raise unreachable(exc) from None
        except UpstreamRejected as exc:
            if exc.status == 401:
                raise JSONError(
                    502, "gateway_misconfigured", "vLLM rejected the gateway's API key"
                ) from None
            raise JSONError(502, "upstream_broken", f"cannot list the models: {exc}") from None
        except UpstreamClosed:
            raise JSONError(
                502, "upstream_broken", "the model server closed the connection without answering"
            ) from None
        except TimeoutError:
            raise JSONError(
                504, "upstream_timeout", "the model server did not list its models in time"
            ) from None
        asked = body.get("model")
        if asked is None and names:
            asked = body["model"] = names[0]
        if not isinstance(asked, str) or asked not in names:
            shown = repr(asked)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            offered = ", ".join(names) or "none"
            raise JSONError(
                404,
                "model_not_found",
                f"the model {shown} does not exist here; this gateway offers: {offered}",
            )
        return asked

    def _checked_body(self, method: str, path: str) -> dict[str, Any] | None:
        if method != "POST":
            return None
        gw = self.gateway
        raw = self.request.body or b""
        if len(raw) > gw.max_body_bytes:
            raise JSONError(
                413, "request_too_large", f"request body over the {gw.max_body_bytes} byte limit"
            )
        body = parse_json_object(raw)
        check_fan_out(body, path)
        cap = gw.max_tokens_cap
        if cap > 0:
            # Clamp rather than refuse: a client asking for "as much as possible" still works.
            asked = body.get("max_tokens")
            if not isinstance(asked, int) or not 0 < asked <= cap:
                body["max_tokens"] = cap
            asked = body.get("max_completion_tokens")
            if asked is not None and (not isinstance(asked, int) or not 0 < asked <= cap):
                body["max_completion_tokens"] = cap
        if body.get("stream"):
            # Ask for the usage block on streams: token limits and metrics need it.
            options = body.get("stream_options") or {}
            if isinstance(options, dict):
                body["stream_options"] = {**options, "include_usage": True}
        return body

    async def _relay(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        tally: AnswerTally,
        started: float,
    ) -> tuple[int, float | None, str | None]:
        """Returns (status sent to the client, time to first byte, error reason or None)."""
        gw = self.gateway
        headers = {"Content-Type": "application/json"}
        if gw.upstream_api_key:
            headers["Authorization"] = f"Bearer {gw.upstream_api_key}"
        upstream: dict[str, Any] = {"status": 0, "content_type": "application/json"}
        first: list[float] = []

        def on_headers(status: int, answer_headers: Mapping[str, str]) -> None:
            upstream["status"] = status
            upstream["content_type"] = answer_headers.get("content-type", "application/json")

        def on_chunk(chunk: bytes) -> Awaitable[None] | None:
            got = time.perf_counter()
            if self._client_gone:
                raise Abort()
            if not first:
                first.append(got - started)
                if self._sent_upstream_at is not None:
                    self._upstream_ttft_s = got - self._sent_upstream_at
                if upstream["status"] == 401:
                    # vLLM refused our key: a deployment fault, not the caller's.
                    upstream["misconfigured"] = True
                if not upstream.get("misconfigured"):
                    self._start_answer(upstream["status"], upstream["content_type"], tally)
            if upstream.get("misconfigured"):
                return None
            self.write(chunk)
            flushed = self.flush()
            if self._first_chunk_s is None:
                self._first_chunk_s = time.perf_counter() - got
            # Counting tokens and hashing come after the client has the bytes.
            tally.feed(chunk)
            if flushed.done():
                if flushed.exception() is not None:
                    raise Abort()
                return None
            return _client_drained(flushed)

        def on_abortable(abort: Any) -> None:
            self._abort_upstream = abort

        def on_sent(new_connection: bool) -> None:
            self._sent_upstream_at = time.perf_counter()
            if new_connection:
                self._new_connection = True
                gw.metrics.upstream_connections.inc()

        if self._client_gone:
            return 499, None, "client_gone"  # hung up while waiting for the Hub or the ledger
        # orjson: the body was parsed by orjson, so it serialises back as it came.
        content = None if body is None else orjson.dumps(body)
        gw.metrics.upstream_requests.labels(route_label(path)).inc()
        try:
            async with asyncio.timeout(gw.upstream_timeout):
                await gw.upstream.request(
                    method,
                    f"/v1/{path}",
                    headers,
                    content,
                    on_headers,
                    on_chunk,
                    on_sent,
                    on_abortable,
                )
        except Abort:
            return 499, first[0] if first else None, "client_gone"
        except UpstreamUnavailable as exc:
            self.send_json_error(unreachable(exc))
            return 503, None, "upstream_down"
        except (TimeoutError, UpstreamClosed) as exc:
            reason = "upstream_timeout" if isinstance(exc, TimeoutError) else "upstream_broken"
            if first:
                # Headers are out; all we can do is end the stream early (`_handle` finishes).
                return upstream["status"], first[0], reason
            if reason == "upstream_timeout":
                message = f"the model server did not answer within {gw.upstream_timeout:g} s"
                self.send_json_error(JSONError(504, reason, message))
                return 504, None, reason
            message = "the model server closed the connection without answering"
            self.send_json_error(JSONError(502, reason, message))
            return 502, None, reason
        ttft = first[0] if first else None
        if upstream.get("misconfigured") or upstream["status"] == 401:
            gw.reload_api_key()  # vLLM may have been restarted with a new key
            self.send_json_error(
                JSONError(502, "gateway_misconfigured", "vLLM rejected the gateway's API key")
            )
            return 502, ttft, "upstream_auth"
        if not first:
            self.set_status(upstream["status"] or 200)
        # `_handle` finishes the answer once the audit row is written.
        status = int(upstream["status"] or 200)
        return status, ttft, None if status < 400 else f"upstream_{status}"

    def _start_answer(self, status: int, content_type: str, tally: AnswerTally) -> None:
        self.set_status(status or 200)
        self.set_header("Content-Type", content_type)
        if tally.streaming:
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")


async def _client_drained(flushed: Awaitable[None]) -> None:
    """Wait for a slow caller's socket to take the last chunk (backpressure to vLLM)."""
    try:
        await flushed
    except StreamClosedError:
        raise Abort() from None


class MetricsHandler(BaseHandler):
    """Prometheus text; needs a token with the Hub's `read:metrics` scope unless disabled."""

    async def get(self) -> None:
        gw = self.gateway
        if gw.metrics_require_auth:
            try:
                user = await self.authenticate()
                if not gw.hub_auth.check_scopes({"read:metrics"}, user):
                    raise JSONError(403, "forbidden", "metrics need the read:metrics scope")
            except JSONError as err:
                self.send_json_error(err)
                return
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(gw.metrics.registry))


class HealthHandler(BaseHandler):
    """Liveness of the gateway itself (no auth, no upstream call, reveals nothing)."""

    def get(self) -> None:
        self.finish({"status": "ok"})


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        # Counted, but under fixed labels: the path asked for is not a label value.
        metrics = self.gateway.metrics
        metrics.errors.labels("-", UNREAD, "not_found").inc()
        metrics.requests.labels("-", UNREAD, "other", "404").inc()
        self.send_json_error(JSONError(404, "not_found", "not found"))
