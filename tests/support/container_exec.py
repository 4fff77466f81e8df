"""Commands run inside a running container through `docker exec`, and HTTP requests made
from there: what the network tests need to see the network as a workspace sees it (its
routes, its firewall, its proxy settings), not as the test's own process does.

The request is made by the container's own `python3` with only the standard library, so
it works in any Python image, and its answer comes back as one line of JSON.
"""

from __future__ import annotations

import json
from typing import Any

import docker

FETCH = r"""
import json, ssl, sys, urllib.error, urllib.request
url, timeout, proxy, method = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
data = sys.argv[5].encode() if len(sys.argv) > 5 and sys.argv[5] else None
# Tests' TLS stand-ins have a throwaway certificate: what is tested is the tunnel, not trust.
handlers = [urllib.request.HTTPSHandler(context=ssl._create_unverified_context())]
if proxy == "none":
    handlers.append(urllib.request.ProxyHandler({}))
elif proxy != "env":
    handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
req = urllib.request.Request(url, data=data, method=method)
for h in sys.argv[6:]:
    k, v = h.split(":", 1)
    req.add_header(k, v.strip())
try:
    with urllib.request.build_opener(*handlers).open(req, timeout=timeout) as r:
        print(json.dumps({"status": r.status, "body": r.read(300).decode("utf-8", "replace")}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read(300).decode("utf-8", "replace")}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "detail": str(e)}))
"""


def run_in(docker_client: docker.APIClient, cid: str, cmd: list[str]) -> tuple[int, str]:
    """Run `cmd` in the container as its own user; exit code and output."""
    ex = docker_client.exec_create(cid, cmd)
    out = docker_client.exec_start(ex).decode("utf-8", "replace")
    return docker_client.exec_inspect(ex["Id"])["ExitCode"], out


def fetch(
    docker_client: docker.APIClient,
    cid: str,
    url: str,
    proxy: str = "env",
    timeout: float = 4,
    method: str = "GET",
    data: str = "",
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An HTTP request from inside the container: {"status", "body"} (the body's first 300
    bytes; an HTTP error status is an answer too) or {"error", "detail"} when none came.
    `proxy`: "env" (the container's HTTP_PROXY/NO_PROXY), "none" (direct) or a proxy URL."""
    cmd = ["python3", "-c", FETCH, url, str(timeout), proxy, method, data, *headers]
    code, out = run_in(docker_client, cid, cmd)
    assert code == 0, out
    return dict(json.loads(out.strip().splitlines()[-1]))
