"""Start a real `jupyter server` with Codeyard on loopback for a benchmark, and stop it.

with running_server(root) as srv:
    srv.get("tree", depth=64); srv.post("patch/apply", {"diff": d})
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    base: str
    token: str

    def call(self, method: str, endpoint: str, body: Any = None, **params: Any) -> Any:
        return json.loads(self.call_raw(method, endpoint, body, **params))

    def call_raw(self, method: str, endpoint: str, body: Any = None, **params: Any) -> bytes:
        """The response body as bytes: what a benchmark times, before any client parsing."""
        query = urllib.parse.urlencode(params)
        url = f"{self.base}codeyard/api/{endpoint}" + (f"?{query}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(req, timeout=600) as resp:
            return resp.read()

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
    server = Server(f"http://127.0.0.1:{port}/", token)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.get("audit", limit=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter server did not start") from None
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
