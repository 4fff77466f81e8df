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
   imported in step 1 is already there.

A claimed launcher never listens again: one container serves one user, once. See
docs/warm-pool.md for the whole design and its security argument.
"""

from __future__ import annotations

import hmac
import importlib
import json
import os
import sys
import time
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


def wait_for_claim(secret: str, port: int) -> Claim:
    """Serve the claim channel on `port` until one authenticated, well-formed claim came."""
    claims: list[Claim] = []

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
            self._answer(200, "claimed\n")

    HTTPServer.allow_reuse_address = True
    server = HTTPServer(("0.0.0.0", port), Handler)  # noqa: S104 - the published port
    try:
        while not claims:
            server.handle_request()
    finally:
        server.server_close()
    return claims[0]


def run_server(claim: Claim, base_env: dict[str, str]) -> Any:
    """Become the user's `jupyterhub-singleuser`: environment, folder, arguments, main()."""
    os.environ.clear()
    os.environ.update(base_env)
    os.environ.update(claim.env)
    if claim.cwd:
        os.chdir(claim.cwd)
    sys.argv = ["jupyterhub-singleuser", *claim.args]
    from jupyterhub.singleuser import main as singleuser_main

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
    claim = wait_for_claim(secret, port)
    del secret
    sys.stderr.write("codeyard-warm-launcher: claimed; starting jupyterhub-singleuser\n")
    sys.exit(run_server(claim, base_env))
