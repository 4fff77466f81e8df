"""Start a real `jupyter server` with Codeyard on loopback for a benchmark, and stop it.

with running_server(root) as srv:
    srv.get("tree", depth=64); srv.post("patch/apply", {"diff": d})

Calls go over one keep-alive connection, as a browser's or the notebook client's would.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CallError(OSError):
    """A call answered with an error status."""


@dataclass
class Server:
    base: str
    token: str
    port: int
    #: The headers of the last answer (`Server-Timing`, for one).
    headers: dict[str, str] = field(default_factory=dict)
    _conn: http.client.HTTPConnection | None = None

    def call(self, method: str, endpoint: str, body: Any = None, **params: Any) -> Any:
        return json.loads(self.call_raw(method, endpoint, body, **params))

    def call_raw(self, method: str, endpoint: str, body: Any = None, **params: Any) -> bytes:
        """The response body as bytes: what a benchmark times, before any client parsing."""
        query = urllib.parse.urlencode(params)
        url = f"/codeyard/api/{endpoint}" + (f"?{query}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            self._conn.request(method, url, data, {"Authorization": f"token {self.token}"})
            resp = self._conn.getresponse()
            raw = resp.read()
        except OSError:
            self._conn.close()
            self._conn = None
            raise
        self.headers = dict(resp.getheaders())
        if resp.status >= 400:
            raise CallError(f"{method} {endpoint}: {resp.status} {raw[:200]!r}")
        return raw

    def server_timing(self) -> dict[str, float]:
        """Milliseconds per phase from the last answer's `Server-Timing` header."""
        phases = {}
        for part in self.headers.get("Server-Timing", "").split(","):
            name, _, dur = part.strip().partition(";dur=")
            if dur:
                phases[name] = float(dur)
        return phases

    def get(self, endpoint: str, **params: Any) -> Any:
        return self.call("GET", endpoint, **params)

    def post(self, endpoint: str, body: Any) -> Any:
        return self.call("POST", endpoint, body)


@contextmanager
def running_server(root: Path, **config: str) -> Iterator[Server]:
    """A `jupyter server` subprocess rooted at `root`, ready when this yields."""
    port, token = free_port(), secrets.token_hex(16)
    args = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_unauthenticated_access=False",
        *(f"--{k}={v}" for k, v in config.items()),
    ]
    if os.geteuid() == 0:
        args.append("--allow-root")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(f"http://127.0.0.1:{port}/", token, port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.get("audit", limit=1)
                break
            except (OSError, http.client.HTTPException):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter server did not start") from None
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
