"""`GatewayApp`: the gateway's settings as traitlets and its tornado server.

Settings come from the command line (`--GatewayApp.port=...`; the Hub config passes every
value it computed this way, see `hubconfig`) or a config file (`--config=...`,
`c.GatewayApp.<name> = ...`). The only environment the gateway reads is what JupyterHub
gives a managed service (`JUPYTERHUB_SERVICE_URL`, `JUPYTERHUB_SERVICE_PREFIX`,
`JUPYTERHUB_API_*`): where vLLM runs, its key and the audit file are passed in, so the
Hub's settings (`CodeyardHub`) are the one place they are decided.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Awaitable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuth
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from traitlets import Bool, Float, Instance, Int, List, TraitError, Unicode, default, validate
from traitlets.config import Application

from . import metrics as metrics_module
from .accounting import TokenLedger
from .audit import GatewayAudit
from .handlers import HealthHandler, MetricsHandler, NotFoundHandler, ProxyHandler
from .metrics import GatewayMetrics
from .models import ModelCatalog
from .prefork import Supervisor, reuse_port_sockets
from .scheduling import RealtimeWorker, set_scheduler_slice
from .token_cache import SharedAnswers, TokenCache
from .upstream import LiteralResolver, UpstreamPool, UpstreamRejected

SCOPE = "custom:codeyard-llm"


class GatewayApp(Application):
    """The LLM gateway service. Override `make_handlers` to add routes."""

    name = "codeyard-llm-gateway"
    description = "Authenticated, rate-limited, audited door from workspaces to the shared vLLM."

    config_file = Unicode(
        "", help="""Python config file to load (`c.GatewayApp.port = ...`)."""
    ).tag(config=True)

    aliases = {
        "config": "GatewayApp.config_file",
        "port": "GatewayApp.port",
        "ip": "GatewayApp.ip",
        "upstream-url": "GatewayApp.upstream_url",
        "log-level": "Application.log_level",
    }

    ip = Unicode(
        help="""Address to listen on. Defaults to the host of JUPYTERHUB_SERVICE_URL, else
        127.0.0.1. Workspaces reach the gateway through the Hub's proxy
        (`/services/<name>/v1`) or directly on this address."""
    ).tag(config=True)

    @default("ip")
    def _default_ip(self) -> str:
        url = os.environ.get("JUPYTERHUB_SERVICE_URL")
        return (urlparse(url).hostname if url else None) or "127.0.0.1"

    port = Int(
        help="""Port to listen on. Defaults to the port of JUPYTERHUB_SERVICE_URL, else 8002."""
    ).tag(config=True)

    @default("port")
    def _default_port(self) -> int:
        url = os.environ.get("JUPYTERHUB_SERVICE_URL")
        return (urlparse(url).port if url else None) or 8002

    service_prefix = Unicode(
        help="""URL prefix the Hub's proxy forwards to this service, e.g.
        `/services/codeyard-llm/`. Routes answer both under it and at the root (`/v1/...`),
        so direct callers need not know it. Defaults to JUPYTERHUB_SERVICE_PREFIX."""
    ).tag(config=True)

    @default("service_prefix")
    def _default_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/codeyard-llm/")

    @validate("service_prefix")
    def _check_prefix(self, proposal: dict[str, Any]) -> str:
        value = "/" + str(proposal["value"]).strip("/") + "/"
        return "/" if value == "//" else value

    upstream_url = Unicode(
        "",
        help="""Base URL of the vLLM OpenAI server, without `/v1`. Required: the Hub config
        passes `CodeyardHub.vllm_url`, else the vLLM `make up` starts on
        `CodeyardHub.vllm_port`. Point it at an external vLLM to share a GPU host.""",
    ).tag(config=True)

    upstream_api_key_file = Unicode(
        "",
        help="""File holding vLLM's API key (serve.sh creates it, mode 0600). Only the gateway
        reads it; workspaces never see it. The Hub config passes `CodeyardHub.vllm_key_file`.
        Empty or a missing file means no key is sent.""",
    ).tag(config=True)

    connect_timeout = Float(
        5.0, help="""Seconds to wait for a TCP connection to vLLM before answering 503."""
    ).tag(config=True)

    upstream_timeout = Float(
        600.0,
        help="""Seconds a whole upstream call may take. When it runs out before the first byte,
        the caller gets 504; after, the stream is ended early.""",
    ).tag(config=True)

    upstream_keepalive_seconds = Float(
        4.0,
        help="""Seconds an idle connection to vLLM is kept for the next call. Reusing it saves
        a TCP connect and vLLM's accept on every call (about 1 ms on loopback, more when vLLM
        is busy). Keep it below vLLM's own keep-alive timeout (5 s by default,
        `--timeout-keep-alive`), so the gateway never reuses a connection vLLM is closing.
        0 opens a new connection per call.""",
    ).tag(config=True)

    upstream_warm_seconds = Float(
        60.0,
        help="""Seconds after a call during which the gateway keeps the connections to vLLM
        that calls left idle open for the next calls: each is replaced in the background by a
        new one before it has been idle for `upstream_keepalive_seconds`, so a burst of calls
        a few seconds after the last finds them open. vLLM closes idle connections after 5 s,
        and a new one costs a wake-up of vLLM's API server on the way to the first token,
        which on busy cores waits for a CPU slice (tens to hundreds of ms). The price is one
        reconnect per kept connection every few seconds while warm
        (`codeyard_llm_upstream_connections_warmed_total`). 0: idle connections are only
        kept for `upstream_keepalive_seconds`.""",
    ).tag(config=True)

    max_idle_upstream_connections = Int(
        64,
        help="""Most idle connections to vLLM kept for reuse; more are closed when their call
        ends. The number in use is bounded by the callers' concurrency limits, not here.""",
    ).tag(config=True)

    token_cache_seconds = Int(
        30,
        help="""Seconds the Hub's answer about a token (its owner and scopes) is reused before
        the Hub is asked again. This is how long a revoked token, a removed user or a withdrawn
        scope may keep working. A lookup costs one Hub API call (a few ms), paid once per token
        per period: at 30 s that is noise for an active user, while a revocation takes effect
        within half a minute (JupyterHub's own default for services is 300 s). An answer past
        half its age that is used again is renewed in the background (`token_cache`), so an
        active token never waits for the Hub; none is used past this age. 0 asks the Hub on
        every call.""",
    ).tag(config=True)

    token_keep_warm_seconds = Int(
        60,
        help="""Seconds after the last call of a token that may use the model during which
        its answer is renewed ahead in the background (every `token_cache_seconds`/6, once
        it is past half its age), so that the user's next call within that time finds a
        fresh answer instead of waiting for the Hub. Costs at most one Hub lookup per
        `token_cache_seconds`/2 per such token, shared by the workers. The revocation bound
        is unchanged: every answer is still the Hub's, used no longer than
        `token_cache_seconds`. 0: answers are renewed only when a call finds them past half
        their age.""",
    ).tag(config=True)

    @validate(
        "token_cache_seconds",
        "token_keep_warm_seconds",
        "upstream_keepalive_seconds",
        "upstream_warm_seconds",
        "max_idle_upstream_connections",
    )
    def _not_negative(self, proposal: dict[str, Any]) -> Any:
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} must be >= 0")
        return proposal["value"]

    max_body_bytes = Int(
        1024 * 1024,
        help="""Largest request body accepted, in bytes. Larger ones get 413.""",
    ).tag(config=True)

    max_tokens_cap = Int(
        2048,
        help="""Upper bound on `max_tokens`/`max_completion_tokens`. Larger or missing values
        are lowered to this cap (not refused). It is also what a call reserves of its
        user's token budget for the answer (`tokens_per_minute_per_user`), and what a call
        cut short is charged for it. 0 disables the cap; a call without `max_tokens` then
        reserves its prompt alone and is charged only what vLLM reports.""",
    ).tag(config=True)

    allowed_models = List(
        Unicode(),
        help="""Model names callers may ask for (the `model` field of a request). Any other
        name gets 404 `model_not_found` without reaching vLLM, and shows as `other` in the
        metrics' `model` label. Empty (the default): the names vLLM serves, learned from its
        `GET /v1/models` when first needed and again every 5 minutes (its
        `--served-model-name`, `smollm2` out of the box). `configure_llm_service(model=...)`
        sets it to the one name the Hub config serves. A request without `model` is sent
        to the first allowed name.""",
    ).tag(config=True)

    max_concurrent_per_user = Int(
        4,
        help="""Requests one user may have in flight at once; one more gets 429 with
        Retry-After. 0 means unlimited.""",
    ).tag(config=True)

    tokens_per_minute_per_user = Int(
        60_000,
        help="""Prompt plus completion tokens one user may spend in any 60 s window; past it,
        requests get 429 with Retry-After until the window frees up. A call is admitted
        only if its reservation (its prompt, estimated at 3 bytes a token, plus
        `max_tokens`) fits next to what the user spent and what their calls in flight
        reserved; it is charged vLLM's reported usage when it ends, or the whole
        reservation if the answer was cut short (the caller hung up). 0 means
        unlimited.""",
    ).tag(config=True)

    required_scopes = List(
        Unicode(),
        default_value=[SCOPE],
        help=f"""A caller's token must hold at least one of these JupyterHub scopes, else 403.
        Define `{SCOPE}` in `c.JupyterHub.custom_scopes` and grant it to users and to
        server tokens (`codeyard.gateway.hubconfig.configure_llm_service` does).
        `access:services!service=<name>` works as well.""",
    ).tag(config=True)

    metrics_require_auth = Bool(
        True,
        help="""Serve `/metrics` only to tokens with the `read:metrics` scope. Turn off only
        when the port is reachable by the Prometheus scraper alone.""",
    ).tag(config=True)

    audit_log_path = Unicode(
        "",
        help="""JSONL file for the audit rows (digests and counts, never text). Required:
        the Hub config passes `<CodeyardHub.state_dir>/llm-audit.jsonl`.""",
    ).tag(config=True)

    central_audit_url = Unicode(
        "",
        help="""Base URL of the central audit service (`.../services/codeyard-audit`) that
        every audit record is sent to, with the gateway's own Hub token (which must hold
        `custom:codeyard-audit-write`). Records wait in `audit_spool_dir` while the service
        is down. Empty: the local log only. The Hub config passes the service's address.""",
    ).tag(config=True)

    audit_spool_dir = Unicode(
        "",
        help="""Folder of the records not yet acknowledged by the central audit. Empty: the
        log's name with `-spool` (`llm-audit.jsonl` -> `llm-audit-spool/`) beside it.""",
    ).tag(config=True)

    processes = Int(
        help="""Gateway worker processes serving the port (SO_REUSEPORT: the kernel spreads
        connections over them, each connection stays with one). One Python process relays
        every stream on one event loop; workers let the gateway use more than one core when
        its own CPU use nears a core (many streams). When the cores are taken by other work
        instead, workers do not shorten the wait for a core (docs/gateway.md has the
        figures). Per-user limits stay exact across workers (`ledger_path`), the audit stays
        one chain, and `/metrics` adds up all workers. Defaults to the cores this process may
        run on, at most 4: more workers than cores only add memory (each holds its own
        connections to vLLM and its own token cache: about 28 MB proportional set size each,
        the rest shared copy-on-write with the supervisor). 1 runs a single process, no
        supervisor.""",
    ).tag(config=True)

    @default("processes")
    def _default_processes(self) -> int:
        return max(1, min(4, len(os.sched_getaffinity(0))))

    @validate("processes")
    def _at_least_one(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise TraitError("processes must be >= 1")
        return int(proposal["value"])

    nice = Int(
        0,
        help="""Scheduling niceness the gateway gives itself at start (-20..19, inherited by
        its workers). The gateway uses little CPU but is on the path of every token: when
        vLLM, workspaces and other services keep the cores busy, each of its wake-ups
        waits in the run queue behind them, which is most of what it adds to time to first
        token there. A negative value (e.g. -10) weighs it above them in the scheduler; with
        autogroup scheduling the session's group gets the same niceness. Lowering niceness
        needs CAP_SYS_NICE (root); without it the gateway logs a warning and runs at its
        inherited niceness. 0 leaves it unchanged.""",
    ).tag(config=True)

    scheduler_slice_ms = Float(
        0.1,
        help="""Run slice the gateway asks the kernel's scheduler for (EEVDF, Linux 6.12 and
        later; `sched_setattr`, no privilege needed), in ms; the kernel keeps it within
        0.1..100. On busy cores a task that wakes up waits until the running one has used its
        slice (1.4 ms by default on 2 cores), whatever its niceness; the gateway wakes several
        times per call (the request, vLLM's first chunk, ...), each on the way to the first
        token. A short slice lets it preempt at once; its share of the CPU is unchanged
        (that is `nice`). 0 leaves the kernel's default. Ignored where unsupported.""",
    ).tag(config=True)

    realtime_priority = Int(
        0,
        help="""Real-time priority (1..99, `SCHED_RR`) each gateway worker takes once its
        event loop runs; 0 keeps the normal policy (`nice` and `scheduler_slice_ms`, which
        also apply where this is refused). A real-time task that wakes up takes a core from
        any normal task at once, so on cores kept busy by vLLM or workspaces the gateway's
        wake-ups (about ten per call, two of them before the first token) do not queue. The
        turn is bounded (codeyard/gateway/scheduling.py): a worker that runs
        `realtime_cpu_limit_ms` without sleeping is told so by the kernel (`RLIMIT_RTTIME`)
        and moves to the normal policy for a few seconds; one that cannot even do that is
        killed by the kernel and started again. The kernel also keeps 5 % of every second
        for normal tasks (`sched_rt_runtime_us`). Needs CAP_SYS_NICE (root); without it
        each worker logs a warning and keeps the normal policy.""",
    ).tag(config=True)

    @validate("realtime_priority")
    def _realtime_range(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if not 0 <= value <= 99:
            raise TraitError("realtime_priority must be 0 (off) or 1..99")
        return value

    realtime_cpu_limit_ms = Int(
        200,
        help="""With `realtime_priority`: CPU time in ms a worker may use without sleeping
        before it leaves the real-time policy for a few seconds (`RLIMIT_RTTIME`; the kernel
        kills it 2 s later if it cannot). A call costs a worker 1-3 ms of CPU and an event
        loop that keeps up sleeps between calls, so only a saturated or stuck worker reaches
        it.""",
    ).tag(config=True)

    @validate("realtime_cpu_limit_ms")
    def _rt_limit_positive(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise TraitError("realtime_cpu_limit_ms must be >= 1")
        return int(proposal["value"])

    ledger_path = Unicode(
        "",
        help="""File of the per-user accounting (`accounting.TokenLedger`, a table of fixed
        size that every worker maps into memory): calls in flight and tokens charged in the
        last minute, shared by every worker so that `max_concurrent_per_user` and
        `tokens_per_minute_per_user` hold exactly however connections are spread. Empty:
        beside the audit log, `<log name>-ledger` (`llm-audit-ledger` in the Hub's state
        folder). One gateway per file: at start the gateway charges and ends every
        reservation left open in it. A file of another layout is started afresh.""",
    ).tag(config=True)

    metrics_dir = Unicode(
        "",
        help="""Folder where workers keep their metric values for `/metrics` to add up
        (prometheus_client's multiprocess mode; used when `processes` > 1, emptied at
        start). Empty: beside the audit log, `<log name>-metrics/`.""",
    ).tag(config=True)

    hub_auth = Instance(HubAuth, help="The HubAuth that checks callers' tokens.")

    @default("hub_auth")
    def _default_hub_auth(self) -> HubAuth:
        # HubAuth treats cache_max_age=0 as "forever"; 0 here means no cache (handlers skip it).
        return HubAuth(parent=self, cache_max_age=max(self.token_cache_seconds, 1))

    _api_key = ""

    @property
    def upstream_api_key(self) -> str:
        """vLLM's key. Read lazily: the Hub may start the gateway before vLLM has made it."""
        if not self._api_key:
            self.reload_api_key()
        return self._api_key

    def reload_api_key(self) -> None:
        if not self.upstream_api_key_file:
            self._api_key = ""
            return
        key_file = Path(self.upstream_api_key_file).expanduser()
        try:
            self._api_key = key_file.read_text().strip()
        except OSError:
            self._api_key = ""

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        # No guessed defaults: a gateway pointed at the wrong vLLM (8001 is the proxy's API)
        # or auditing into a folder nobody reads is worse than one that does not start.
        missing = [name for name in ("upstream_url", "audit_log_path") if not getattr(self, name)]
        if missing:
            self.exit(
                "codeyard-llm-gateway: set "
                + " and ".join(f"--GatewayApp.{name}" for name in missing)
                + " (the Hub config passes them; see codeyard.gateway.hubconfig)"
            )
        if self.upstream_api_key_file and not self.upstream_api_key:
            self.log.warning(
                "no vLLM key at %s yet: will read it again on each call until it appears",
                self.upstream_api_key_file,
            )

    def _beside_audit_log(self, suffix: str) -> Path:
        log = Path(self.audit_log_path)
        return log.with_name(log.stem + suffix)

    @property
    def shared_ledger_path(self) -> Path:
        return Path(self.ledger_path) if self.ledger_path else self._beside_audit_log("-ledger")

    @property
    def shared_metrics_dir(self) -> Path:
        return Path(self.metrics_dir) if self.metrics_dir else self._beside_audit_log("-metrics")

    @property
    def shared_answers_path(self) -> Path:
        """The token answers the workers share (`token_cache.SharedAnswers`)."""
        return self._beside_audit_log("-token-answers")

    def open_shared_answers(self) -> SharedAnswers | None:
        if self.token_cache_seconds <= 0:
            return None
        path = self.shared_answers_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return SharedAnswers(path)

    def open_ledger(self) -> TokenLedger:
        path = self.shared_ledger_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return TokenLedger(self.max_concurrent_per_user, self.tokens_per_minute_per_user, path=path)

    def setup_worker(self, index: int, shared_metrics: bool) -> None:
        """Make what one serving process uses. Runs in the worker, after the fork: the ledger's
        map, threads and sockets must not cross a fork."""
        self.worker_index = index
        self.pid = os.getpid()
        self.metrics = GatewayMetrics(self.shared_metrics_dir if shared_metrics else None)
        self.ledger = self.open_ledger()
        self.audit = GatewayAudit(
            self.audit_log_path,
            central_url=self.central_audit_url,
            token=self.hub_auth.api_token,
            spool_dir=self.audit_spool_dir or None,
            logger=self.log,
            sender=index == 0,
        )
        self.upstream = self.make_upstream()
        self.models = ModelCatalog(self.allowed_models, self.fetch_served_models)
        self.shared_answers = self.open_shared_answers()
        self.tokens = TokenCache(
            self._ask_hub,
            self._may_call,
            self.token_cache_seconds,
            shared=self.shared_answers,
            on_lookup=lambda when: self.metrics.hub_lookups.labels(when).inc(),
            keep_warm=self.token_keep_warm_seconds,
        )
        # The Hub lookups go through tornado's default client: answer IP literals (the
        # usual Hub API address) without its resolver's thread-pool hop.
        AsyncHTTPClient.configure(None, resolver=LiteralResolver())

    def _ask_hub(self, token: str) -> Awaitable[dict[str, Any] | None]:
        # The gateway's own cache (`tokens`) decides when to ask; HubAuth's must not answer
        # a renewal with what it holds.
        return self.hub_auth.user_for_token(token, use_cache=False, sync=False)  # type: ignore[no-any-return]

    def _may_call(self, user: dict[str, Any]) -> bool:
        return bool(self.hub_auth.check_scopes(set(self.required_scopes), user))

    def reset_shared_state(self) -> None:
        """Before any process serves: end reservations a previous run left open (charged in
        full, as a call cut short), forget its token answers and its metric values."""
        answers = self.open_shared_answers()
        if answers is not None:
            answers.clear()
            answers.close()
        ledger = self.open_ledger()
        try:
            left = ledger.close_all_open()
        finally:
            ledger.close()
        if left:
            self.log.warning("charged %d reservations left open by an earlier run", left)
        if self.processes > 1:
            metrics_module.reset_shared_folder(self.shared_metrics_dir)

    def _worker_gone(self, pid: int) -> None:
        ledger = self.open_ledger()
        try:
            left = ledger.close_process(pid)
        finally:
            ledger.close()
        if left:
            self.log.warning("charged %d calls of gateway worker pid %d that died", left, pid)
        metrics_module.worker_gone(self.shared_metrics_dir, pid)

    async def fetch_served_models(self) -> list[str]:
        """The model names vLLM serves, from its `GET /v1/models`.

        Raises `UpstreamUnavailable`/`UpstreamClosed`/`TimeoutError` as a forwarded call
        would, and `UpstreamRejected` for any answer but 200 (401: vLLM refused our key).
        """
        headers = {"Accept": "application/json"}
        if self.upstream_api_key:
            headers["Authorization"] = f"Bearer {self.upstream_api_key}"
        answer: dict[str, Any] = {"status": 0, "body": bytearray()}

        def on_headers(status: int, _headers: Any) -> None:
            answer["status"] = status

        def on_chunk(chunk: bytes) -> None:
            answer["body"] += chunk

        def on_sent(new_connection: bool) -> None:
            if new_connection:
                self.metrics.upstream_connections.inc()

        self.metrics.upstream_requests.labels("models").inc()
        async with asyncio.timeout(self.connect_timeout + 10):
            await self.upstream.request(
                "GET", "/v1/models", headers, None, on_headers, on_chunk, on_sent
            )
        if answer["status"] != 200:
            if answer["status"] == 401:
                self.reload_api_key()  # vLLM may have been restarted with a new key
            raise UpstreamRejected(answer["status"])
        try:
            listing = json.loads(bytes(answer["body"]))
            return [str(m["id"]) for m in listing["data"]]
        except (ValueError, KeyError, TypeError):
            raise UpstreamRejected(answer["status"], "model list is not OpenAI's shape") from None

    def make_upstream(self) -> UpstreamPool:
        """One pool for every upstream call: connections to vLLM are kept and reused."""
        return UpstreamPool(
            self.upstream_url,
            idle_seconds=self.upstream_keepalive_seconds,
            max_idle=self.max_idle_upstream_connections,
            connect_timeout=self.connect_timeout,
            warm_seconds=self.upstream_warm_seconds,
            on_warmed=self.metrics.upstream_connections_warmed.inc,
        )

    def make_handlers(self) -> list[Any]:
        routes: list[Any] = []
        prefixes = [self.service_prefix] + ([] if self.service_prefix == "/" else ["/"])
        for prefix in prefixes:
            routes += [
                (rf"{prefix}v1/(.*)", ProxyHandler),
                (rf"{prefix}metrics", MetricsHandler),
                (rf"{prefix}health", HealthHandler),
            ]
        routes.append((r".*", NotFoundHandler))
        return routes

    def make_app(self) -> web.Application:
        return web.Application(self.make_handlers(), gateway=self, log_function=self._log_request)

    def _log_request(self, handler: web.RequestHandler) -> None:
        # No query strings or bodies in logs.
        self.log.info(
            "%s %s %s %.1fms",
            handler.get_status(),
            handler.request.method,
            handler.request.path,
            1000 * handler.request.request_time(),
        )

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        server = HTTPServer(self.make_app(), max_body_size=max(self.max_body_bytes * 4, 1 << 20))
        if sockets is None:
            server.listen(self.port, self.ip)
        else:
            server.add_sockets(sockets)
        self.log.info(
            "codeyard LLM gateway worker %d (pid %d) on http://%s:%s%s -> %s",
            self.worker_index,
            self.pid,
            self.ip,
            self.port,
            self.service_prefix,
            self.upstream_url,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        realtime = RealtimeWorker(
            self.realtime_priority, self.realtime_cpu_limit_ms, self.scheduler_slice_ms, self.log
        )
        if self.realtime_priority:
            realtime.enter(loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        keep_warm = asyncio.ensure_future(self.tokens.keep_warm_loop())
        keep_warm.add_done_callback(self._keep_warm_ended)
        await stop.wait()
        realtime.leave()  # shutting down is not on any caller's path
        keep_warm.cancel()
        server.stop()
        self.upstream.close()
        self.audit.close()
        self.ledger.close()
        if self.shared_answers is not None:
            self.shared_answers.close()

    def _keep_warm_ended(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("token answers are no longer kept warm", exc_info=task.exception())

    def _serve_worker(self, index: int, sockets: list[socket.socket]) -> None:
        self.setup_worker(index, shared_metrics=True)
        asyncio.run(self.serve(sockets))

    def _set_priority(self) -> None:
        """Apply `nice` to the process and, where the kernel groups tasks by session
        (autogroup, the default on desktop and many server kernels), to its group: there a
        process's niceness only ranks it against its own session, and the Hub starts every
        service in a session of its own. Then ask for `scheduler_slice_ms`; workers inherit
        both. `realtime_priority` is taken by each worker once its loop runs (`serve`)."""
        if self.nice:
            self._set_nice()
        if self.scheduler_slice_ms > 0:
            try:
                set_scheduler_slice(self.scheduler_slice_ms)
            except OSError as exc:
                self.log.warning(
                    "cannot ask for a %g ms run slice: %s", self.scheduler_slice_ms, exc
                )

    def _set_nice(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        except PermissionError:
            self.log.warning(
                "cannot set niceness %d (needs CAP_SYS_NICE); running at %d",
                self.nice,
                os.getpriority(os.PRIO_PROCESS, 0),
            )
            return
        autogroup = Path("/proc/self/autogroup")
        try:
            if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1":
                autogroup.write_text(str(self.nice))
        except OSError as exc:
            self.log.warning("cannot set the niceness of the session's autogroup: %s", exc)

    def start(self) -> None:
        self._set_priority()
        self.reset_shared_state()
        if self.processes == 1:
            self.setup_worker(0, shared_metrics=False)
            asyncio.run(self.serve())
            return
        sockets = reuse_port_sockets(self.processes, self.port, self.ip)
        self.log.info(
            "codeyard LLM gateway: %d workers on http://%s:%s (supervisor pid %d)",
            self.processes,
            self.ip,
            self.port,
            os.getpid(),
        )
        Supervisor(sockets, self._serve_worker, self._worker_gone, self.log).run()


def main(argv: list[str] | None = None) -> None:
    app = GatewayApp.instance()
    app.initialize(argv)
    app.start()
