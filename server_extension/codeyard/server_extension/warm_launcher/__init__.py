"""The warm-pool launcher: a pre-imported Jupyter server process that waits to be claimed.

A pooled workspace container runs `python -m codeyard.server_extension.warm_launcher`
instead of `jupyterhub-singleuser`. `jupyterhub-singleuser` reads its user, base URL and API token
from the environment when it starts, so it cannot be started before anyone claims the
container; what costs the time is importing jupyter_server, JupyterLab and the extensions,
and that does not depend on the user. So the launcher:

1. imports everything the server will import: a forked child starts a throwaway server
   (no user, no token of anyone's, a loopback port, a private folder in /tmp) up to the
   point where it would listen, and reports the modules that took (`modules_of_dry_run`);
   the launcher imports those, plus `PREIMPORTS`, itself. The child exits; the launcher
   never initialises a server before the claim, so nothing of the dry run's state lives on;
2. listens on the server's own port for one claim, `POST /claim`, authenticated by the
   per-container secret the Hub put in `CODEYARD_POOL_SECRET` (compared in constant time;
   anything else is refused, and the secret is removed from the environment at once, so no
   child process of the server ever inherits it);
3. on the claim, stops listening, replaces its whole environment with the claimed one (the
   image's own variables plus the user's), changes to the workspace folder and runs
   `jupyterhub-singleuser` with the claimed arguments *in this process*, so every module
   imported in step 1 is already there;
4. answers the claim only once that server listens on the port (`HeldAnswer`; at most
   `ANSWER_WITHIN` seconds later), so the Hub's first check of the server finds it up and
   the Hub never polls for it. The phases of that start go to the log as one line
   (`Phases`), which `tests/bench/bench_warm_pool.py` reads.

A claimed launcher never listens again: one container serves one user, once. See
docs/warm-pool.md for the whole design and its security argument.
"""

from __future__ import annotations

import atexit
import functools
import hmac
import importlib
import inspect
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

SECRET_ENV = "CODEYARD_POOL_SECRET"  # noqa: S105 - a variable name, not a secret
PORT_ENV = "CODEYARD_POOL_PORT"
#: What `jupyterhub-singleuser` imports on its way up, in the order it needs them. A module
#: missing from the image is skipped: the server then imports it itself, only slower.
PREIMPORTS = (
    "tornado.web",
    "jupyter_server.serverapp",
    "jupyter_server.services.contents.largefilemanager",
    "jupyter_server.services.kernels.kernelmanager",
    "jupyter_server.gateway.managers",
    "jupyterhub.singleuser",
    "jupyterhub.singleuser.extension",
    "jupyterhub.singleuser.mixins",
    "jupyterlab.labapp",
    "jupyterlab_server",
    "jupyter_server_terminals",
    "jupyter_lsp",
    "notebook_shim",
    "codeyard.server_extension",
    "codeyard.server_extension.app",
    "codeyard.jupyter_ai_on_demand",
    "jupyter_ai_router",
    "jupyter_ai_persona_manager",
    "jupyterlab_chat",
    "ipykernel.kernelspec",
)
#: Most bytes a claim may carry (the environment and arguments of one server).
MAX_CLAIM = 256 * 1024
#: Longest the claim's answer is held back waiting for the server to listen. The Hub then
#: finds the server up at its first check instead of polling for it; past this, the
#: launcher answers anyway and the Hub waits for the server as after a cold start.
ANSWER_WITHIN = 5.0
#: The log line (prefix) that carries the claim's phase timings as JSON, for the benchmark.
TIMINGS_TAG = "codeyard-warm-launcher: claim timings "


def modules_of_dry_run(timeout: float = 300) -> list[str]:
    """The modules a server start imports, from a throwaway start in a forked child.

    The child only initialises the server (extensions linked and loaded, handlers made);
    it runs in a private temporary HOME and runtime folder with a random token, and is
    gone before the launcher listens. Returns [] if it fails: the launcher then relies on
    `PREIMPORTS` alone.
    """
    import secrets
    import signal
    import tempfile

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_end)
            signal.alarm(int(timeout))  # a hung dry run dies, and the pipe closes
            scratch = tempfile.mkdtemp(prefix="codeyard-warmup-")
            os.environ.update(
                HOME=scratch, JUPYTER_RUNTIME_DIR=scratch, JUPYTER_DATA_DIR=scratch + "/data"
            )
            os.chdir(scratch)
            from jupyter_server.serverapp import ServerApp

            app = ServerApp()
            app.initialize(
                [
                    "--ip=127.0.0.1",
                    "--port=0",
                    f"--IdentityProvider.token={secrets.token_hex(16)}",
                    "--ServerApp.open_browser=False",
                    "--ServerApp.log_level=WARN",
                    f"--ServerApp.root_dir={scratch}",
                ]
            )
            with os.fdopen(write_end, "w") as out:
                out.write("\n".join(sys.modules))
            code = 0
        except BaseException:  # noqa: S110 - the parent falls back to PREIMPORTS
            pass
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(read_end) as inp:
        chunks.append(inp.read())
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return [m for m in "".join(chunks).splitlines() if m and m != "__main__"]


def preimport(names: tuple[str, ...] = PREIMPORTS) -> list[str]:
    """Import `names`; return those that failed (absent from this image)."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            missing.append(name)
    return missing


class Claim:
    """What the Hub hands over: the server's environment, arguments and working folder."""

    def __init__(self, env: dict[str, str], args: list[str], cwd: str) -> None:
        self.env, self.args, self.cwd = env, args, cwd

    @classmethod
    def parse(cls, body: bytes) -> Claim:
        data = json.loads(body)
        env, args, cwd = data.get("env"), data.get("args"), data.get("cwd", "")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError("env must map names to strings")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("args must be a list of strings")
        if not isinstance(cwd, str):
            raise ValueError("cwd must be a string")
        return cls(env, args, cwd)


class HeldAnswer:
    """The claim's HTTP answer, sent once: when the server listens, after `ANSWER_WITHIN`,
    or when the process exits, whichever comes first.

    Holding the answer until the server listens tells the Hub the moment it may use the
    server, so it needs no polling (each poll costs an interval and an engine call). The
    connection is the Hub's own claim call; the listening socket is closed before the
    server binds the port, so nothing else can reach the launcher meanwhile.
    """

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.state = ""
        self._lock = threading.Lock()

    def send(self, state: str) -> None:
        with self._lock:
            if self.state:
                return
            self.state = state
        if self.sock is None:
            return
        body = f"claimed; {state}\n".encode()
        head = (
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            self.sock.sendall(head + body)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the Hub gave up on the call; it falls back to a cold start
        finally:
            self.sock.close()


def wait_for_claim(secret: str, port: int) -> tuple[Claim, HeldAnswer]:
    """Serve the claim channel on `port` until one authenticated, well-formed claim came.

    Returns the claim and its held answer: the claim's connection stays open, unanswered,
    after the listening socket is closed (`HeldAnswer`)."""
    claims: list[Claim] = []
    held: list[socket.socket] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write("codeyard-warm-launcher: " + (format % args) + "\n")

        def _answer(self, code: int, text: str) -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            # Readiness only: says nothing but that the imports are done.
            self._answer(200 if self.path == "/warm" else 404, "warm\n")

        def do_POST(self) -> None:
            if self.path != "/claim" or claims:
                self._answer(404, "no\n")
                return
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), secret.encode()):
                self._answer(403, "refused\n")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_CLAIM:
                self._answer(400, "bad length\n")
                return
            try:
                claim = Claim.parse(self.rfile.read(length))
            except ValueError as e:
                self._answer(400, f"{e}\n")
                return
            claims.append(claim)
            held.append(self.connection)
            self.log_request(200)
            self.close_connection = True

    class Server(HTTPServer):
        allow_reuse_address = True

        def shutdown_request(self, request: Any) -> None:
            if request in held:
                return  # answered by HeldAnswer once the server listens
            super().shutdown_request(request)

    server = Server(("0.0.0.0", port), Handler)  # noqa: S104 - the published port
    try:
        while not claims:
            server.handle_request()
    finally:
        server.server_close()
    return claims[0], HeldAnswer(held[0] if held else None)


class Phases:
    """Wall time of the server's start-up phases after the claim, for one log line.

    The wrapped methods are the server's own; the wrappers only take the time."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.epoch = time.time()
        self.spans: list[tuple[str, float, float]] = []

    def wrap(
        self, owner: Any, name: str, label: str, after: Callable[[], None] | None = None
    ) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return
        spans = self.spans
        started = self.started

        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                t = time.monotonic()
                try:
                    return await original(*args, **kwargs)
                finally:
                    spans.append((label, t - started, time.monotonic() - t))

            setattr(owner, name, timed_async)
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.monotonic()
            try:
                result = original(*args, **kwargs)
            finally:
                spans.append((label, t - started, time.monotonic() - t))
            if after is not None:
                after()  # only once it worked: a failed bind exits instead
            return result

        setattr(owner, name, timed)

    def line(self, state: str) -> str:
        """One log line: the phases, then the same as JSON after `TIMINGS_TAG`."""
        at = time.monotonic() - self.started
        text = ", ".join(f"{label} {took:.3f}s" for label, _start, took in self.spans)
        data = {
            "claimed_epoch": self.epoch,
            state: at,
            "spans": [[label, round(s, 4), round(t, 4)] for label, s, t in self.spans],
        }
        return (
            f"codeyard-warm-launcher: {state} {at:.3f}s after the claim ({text})\n"
            f"{TIMINGS_TAG}{json.dumps(data)}\n"
        )


def run_server(claim: Claim, base_env: dict[str, str], answer: HeldAnswer | None = None) -> Any:
    """Become the user's `jupyterhub-singleuser`: environment, folder, arguments, main().

    The claim is answered once the server listens on its port (`HeldAnswer`)."""
    answer = answer or HeldAnswer(None)
    phases = Phases()
    timer = threading.Timer(ANSWER_WITHIN, answer.send, ["starting"])
    timer.daemon = True
    atexit.register(answer.send, "exited")
    os.environ.clear()
    os.environ.update(base_env)
    os.environ.update(claim.env)
    if claim.cwd:
        os.chdir(claim.cwd)
    sys.argv = ["jupyterhub-singleuser", *claim.args]
    from jupyter_server.serverapp import ServerApp
    from jupyterhub.singleuser import main as singleuser_main

    def listening() -> None:
        answer.send("listening")
        timer.cancel()
        sys.stderr.write(phases.line("listening"))

    phases.wrap(ServerApp, "initialize", "initialize")
    phases.wrap(ServerApp, "init_server_extensions", "link extensions")
    phases.wrap(ServerApp, "init_webapp", "web app")
    phases.wrap(ServerApp, "load_server_extensions", "load extensions")
    with_hub = getattr(singleuser_main, "__self__", None)
    if with_hub is not None:
        phases.wrap(with_hub, "check_hub_version", "hub version check")
    if hasattr(ServerApp, "_bind_http_server"):
        phases.wrap(ServerApp, "_bind_http_server", "bind", after=listening)
    else:
        answer.send("starting")  # no hook here: the Hub polls for the server instead
    timer.start()
    return singleuser_main()


def main() -> None:
    secret = os.environ.pop(SECRET_ENV, "")
    if len(secret) < 32:
        sys.exit("codeyard-warm-launcher: no pool secret; refusing to listen")
    port = int(os.environ.pop(PORT_ENV, "8888"))
    base_env = dict(os.environ)
    started = time.monotonic()
    missing = preimport()
    learned = modules_of_dry_run()
    preimport(tuple(m for m in learned if m not in sys.modules))
    sys.stderr.write(
        f"codeyard-warm-launcher: imports done in {time.monotonic() - started:.1f}s"
        f" ({len(sys.modules)} modules, {len(learned)} from a dry run; not in this image:"
        f" {', '.join(missing) or 'none'}); waiting for a claim\n"
    )
    claim, answer = wait_for_claim(secret, port)
    del secret
    sys.stderr.write("codeyard-warm-launcher: claimed; starting jupyterhub-singleuser\n")
    sys.exit(run_server(claim, base_env, answer))
