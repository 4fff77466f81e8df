"""A private git remote over HTTP: `git http-backend` behind Basic auth, for clone tests.

git daemon has no authentication, so the repository is served by git's own smart-HTTP CGI
program, `git http-backend`, from a small threaded `http.server` that answers 401 with a
Basic challenge unless the request carries the one user name and token it was made with.
It listens on the docker bridge, where the clone helper containers reach it. Every
request's method, path and whether it was authorised are recorded, so tests can tell a
refused credential from one never sent.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class PrivateGitServer:
    root: Path
    host: str
    port: int
    username: str
    token: str
    #: (method, path, authorised) of every request, in order.
    requests: list[tuple[str, str, bool]] = field(default_factory=list)
    #: Called at the start of every request, while the client (git) waits for the answer.
    on_request: Callable[[], None] | None = None

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"


def _handler(server: PrivateGitServer) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{server.username}:{server.token}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            if server.on_request is not None:
                server.on_request()
            authorised = secrets.compare_digest(self.headers.get("Authorization", ""), expected)
            server.requests.append((self.command, self.path, authorised))
            if not authorised:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="private"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": server.username,
                "REMOTE_ADDR": self.client_address[0],
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            }
            out = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            ).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

    return Handler


def publish_repo(
    base: Path, name: str, files: dict[str, str], *, git: Sequence[str], message: str
) -> Path:
    """Commit `files` once on `main` in `base/work` (`git` is the command with the author's
    `-c user.*`) and publish it as the bare repository `base/srv/<name>`, so that
    `private_git_server(base / "srv", ...)` serves it. Returns the bare repository."""
    work = base / "work"
    work.mkdir()
    for rel, text in files.items():
        (work / rel).write_text(text)
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=work, check=True)
    subprocess.run([*git, "add", "."], cwd=work, check=True)
    subprocess.run([*git, "commit", "-q", "-m", message], cwd=work, check=True)
    root = base / "srv"
    root.mkdir()
    bare = root / name
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


@contextmanager
def private_git_server(root: Path, host: str) -> Iterator[PrivateGitServer]:
    """Serve the bare repositories under `root` at http://host:<free port>/<name>."""
    server = PrivateGitServer(
        root, host, 0, username="robot", token="tok-" + secrets.token_urlsafe(24)
    )
    httpd = ThreadingHTTPServer((host, 0), _handler(server))
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
