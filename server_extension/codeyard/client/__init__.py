"""A small synchronous client for the workspace API, for notebook cells and scripts.

    from codeyard.client import Workspace
    ws = Workspace()                  # finds its own server and token
    ws.tree(); ws.read("src/app.py")
    result = ws.apply(diff, base={"src/app.py": sha})
    ws.revert(result["patch_id"])
    ws.explain("src/app.py", 10, 20)["text"]
    proposal = ws.rewrite("src/app.py", 10, 20, "add type hints")
    if not proposal["unchanged"] and proposal["checks"]["parses"] is not False:
        ws.apply(proposal["diff"], proposal["base"])

It uses only the standard library so that it imports in any kernel.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CodeyardAPIError", "ServerNotFound", "Workspace", "discover"]


class CodeyardAPIError(Exception):
    """The server answered with an error; `status`, `code` and `message` are its own."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class ServerNotFound(RuntimeError):
    """No running Jupyter server with Codeyard could be found from this process."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # e.g. http://127.0.0.1:8888/user/alice/ws/ (always ends with "/")
    token: str


def _local_url(url: str) -> str:
    """A server bound to all interfaces is reached on loopback from inside its container."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - we rewrite it, never bind it
        host = "127.0.0.1"
    netloc = f"{host}:{parts.port}" if parts.port else host
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urllib.parse.urlunsplit((parts.scheme or "http", netloc, path, "", ""))


def discover(env: dict[str, str] | None = None, cwd: str | None = None) -> Endpoint:
    """Find the server this process belongs to.

    Order: CODEYARD_SERVER_URL/CODEYARD_TOKEN; the JupyterHub single-user environment a
    kernel inherits (JUPYTERHUB_SERVICE_URL + JUPYTERHUB_API_TOKEN); then the runtime
    files of local jupyter servers, preferring the one whose root contains `cwd`.
    """
    env = dict(os.environ if env is None else env)
    if env.get("CODEYARD_SERVER_URL"):
        return Endpoint(_local_url(env["CODEYARD_SERVER_URL"]), env.get("CODEYARD_TOKEN", ""))
    if env.get("JUPYTERHUB_SERVICE_URL") and env.get("JUPYTERHUB_API_TOKEN"):
        return Endpoint(_local_url(env["JUPYTERHUB_SERVICE_URL"]), env["JUPYTERHUB_API_TOKEN"])
    servers: list[dict[str, Any]] = []
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:  # pragma: no cover - the client may run without jupyter_server
        pass
    else:
        servers = list(list_running_servers())
    if not servers:
        raise ServerNotFound(
            "no running Jupyter server found; set CODEYARD_SERVER_URL and CODEYARD_TOKEN"
        )
    here = Path(cwd or os.getcwd()).resolve()

    def depth(info: dict[str, Any]) -> int:
        root = Path(info.get("root_dir") or info.get("notebook_dir") or "/").resolve()
        return len(root.parts) if here == root or root in here.parents else -1

    best = max(servers, key=depth)
    return Endpoint(_local_url(best["url"]), best.get("token", ""))


class Workspace:
    """The workspace API of one server. Every method raises CodeyardAPIError on an error."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 120):
        found = Endpoint(_local_url(url), token or "") if url else discover()
        self.base_url = found.base_url
        self.token = token if token is not None else found.token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Workspace({self.base_url!r})"

    def _call(
        self, method: str, endpoint: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        url = f"{self.base_url}codeyard/api/{endpoint}" + (f"?{query}" if query else "")
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) only
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"error": "http_error", "message": raw.decode("utf-8", "replace")[:500]}
            raise CodeyardAPIError(
                exc.code,
                str(payload.get("error", "http_error")),
                str(payload.get("message", exc.reason)),
                payload,
            ) from None

    def tree(self, path: str = "", depth: int = 1, limit: int | None = None) -> dict[str, Any]:
        return self._call("GET", "tree", {"path": path, "depth": depth, "limit": limit})

    def read(self, path: str, encoding: str | None = None) -> dict[str, Any]:
        return self._call("GET", "files", {"path": path, "encoding": encoding})

    def validate(self, diff: str, base: dict[str, str] | None = None) -> dict[str, Any]:
        return self._call("POST", "patch/validate", body=_patch_body(diff, base))

    def apply(self, diff: str, base: dict[str, str] | None = None) -> dict[str, Any]:
        return self._call("POST", "patch/apply", body=_patch_body(diff, base))

    def revert(self, patch_id: str) -> dict[str, Any]:
        return self._call("POST", f"patch/{urllib.parse.quote(patch_id, safe='')}/revert", body={})

    def audit(self, limit: int = 50) -> dict[str, Any]:
        return self._call("GET", "audit", {"limit": limit})

    def explain(
        self,
        path: str,
        start_line: int,
        end_line: int,
        question: str | None = None,
        *,
        cell_id: str | None = None,
        max_tokens: int | None = None,
        context_lines: int | None = None,
    ) -> dict[str, Any]:
        """The model's explanation of lines `start_line..end_line` (1-based, inclusive) of
        `path`, or of a notebook cell's lines with `cell_id`: `{"text", "usage"}`.

        One JSON answer, not the panel's event stream: a script wants the whole text.
        `max_tokens` and `context_lines` must lie within the server's limits (else 400).
        """
        body = _range_body(path, start_line, end_line, cell_id, max_tokens, context_lines)
        if question:
            body["question"] = question
        return self._call("POST", "explain", body=body)

    def rewrite(
        self,
        path: str,
        start_line: int,
        end_line: int,
        instruction: str,
        *,
        cell_id: str | None = None,
        max_tokens: int | None = None,
        context_lines: int | None = None,
    ) -> dict[str, Any]:
        """A proposed change of lines `start_line..end_line` as the instruction says, not
        applied: `{"diff", "base", "unchanged", "usage", "finish_reason", "raw", "checks"}`.

        Look at `checks` before applying: `parses` is False when the changed file no longer
        parses, `outside_selection` True when the diff touches other lines. Apply a file's
        diff with `apply(diff, base)`; a cell's (with `cell_id`) goes to
        `patch/cell/apply`. `finish_reason == "length"` means `max_tokens` cut the answer.
        """
        body = _range_body(path, start_line, end_line, cell_id, max_tokens, context_lines)
        body["instruction"] = instruction
        return self._call("POST", "rewrite", body=body)

    def complete(
        self, path: str, prefix: str, suffix: str = "", *, max_tokens: int | None = None
    ) -> dict[str, Any]:
        """An inline completion of `prefix` (the text before the cursor in `path`), with
        `suffix` after it: `{"completion", "usage"}`. `path` names the language and is
        not read."""
        body: dict[str, Any] = {"path": path, "prefix": prefix, "suffix": suffix}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self._call("POST", "complete", body=body)


def _range_body(
    path: str,
    start_line: int,
    end_line: int,
    cell_id: str | None,
    max_tokens: int | None,
    context_lines: int | None,
) -> dict[str, Any]:
    """The fields explain and rewrite share; unset options are left to the server."""
    body: dict[str, Any] = {"path": path, "start_line": start_line, "end_line": end_line}
    for key, value in (
        ("cell_id", cell_id),
        ("max_tokens", max_tokens),
        ("context_lines", context_lines),
    ):
        if value is not None:
            body[key] = value
    return body


def _patch_body(diff: str, base: dict[str, str] | None) -> dict[str, Any]:
    return {"diff": diff, **({"base": base} if base else {})}
