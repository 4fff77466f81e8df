"""The usage page from a real run: a real JupyterHub spawns real workspace servers
(`jupyterhub-singleuser` with Codeyard, local processes), a real explain goes through the
workspace, the real LLM gateway and the shared vLLM, patches are applied and reverted in the
workspace, and the Hub records each start and stop. All of it reaches the real central audit
service (run by the test as a Hub service), and the usage page and CSV must show exactly those
numbers: per user, per group, for the admin; a user sees their own only. A real Chromium
draws the page and saves a screenshot.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from support.audit_service import AuditService, local_process_workspaces
from support.chromium import CHROMIUM_FLAGS, chromium
from support.contents_api import text_file
from support.hub import MINIMAL_ADMIN_SCOPES, Gateway, HubProcess
from support.processes import free_port

WORKSPACE = "ws1"
GATEWAY = "codeyard-llm"
MODEL = "smollm2"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "hub"
CODE = "def area(r):\n    return 3.14159 * r * r\n"


@dataclass
class UsageStack:
    hub: HubProcess
    audit: AuditService
    state: Path
    ws_port: int
    tokens: dict[str, str]

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = self.hub.user_token(user)
        return self.tokens[user]

    def server(self, user: str) -> dict[str, Any] | None:
        model = self.hub.api_json("GET", f"users/{user}")
        return (model.get("servers") or {}).get(WORKSPACE)  # type: ignore[no-any-return]

    def start(self, user: str) -> float:
        self.token(user)
        r = self.hub.request("POST", f"users/{user}/servers/{WORKSPACE}", {})
        assert r.status_code in (201, 202), r.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            server = self.server(user)
            if server and server.get("ready"):
                return time.time()
            time.sleep(0.5)
        raise TimeoutError(f"workspace did not start:\n{self.hub.log_tail()}")

    def stop(self, user: str) -> float:
        self.hub.request("DELETE", f"users/{user}/servers/{WORKSPACE}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.server(user):
            time.sleep(0.5)
        return time.time()

    def ws(self, user: str, method: str, endpoint: str, **kw: Any) -> requests.Response:
        url = f"http://127.0.0.1:{self.ws_port}/user/{user}/{WORKSPACE}/{endpoint}"
        headers = {"Authorization": f"token {self.token(user)}"}
        return requests.request(method, url, headers=headers, timeout=300, **kw)

    def apply(self, user: str, name: str) -> str:
        diff = f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1 @@\n+value = 1\n"
        r = self.ws(user, "POST", "codeyard/api/patch/apply", json={"diff": diff})
        assert r.status_code == 200, r.text
        return str(r.json()["patch_id"])

    def local_log(self, user: str) -> list[dict[str, Any]]:
        path = self.state / "homes" / user / ".codeyard" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def gateway_log(self) -> list[dict[str, Any]]:
        path = self.state / f"{GATEWAY}-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def spawn_log(self) -> list[dict[str, Any]]:
        path = self.state / "spawn-events" / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def central(self, **params: Any) -> list[dict[str, Any]]:
        r = self.audit.get("api/records", self.token("auditor"), **params)
        assert r.status_code == 200, r.text
        return list(r.json()["records"])

    def wait_central(self, source: str, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = [r for r in self.central() if r["source"] == source]
            if len(rows) >= count:
                return
            time.sleep(0.5)
        raise AssertionError(f"{source}: {len(rows)} of {count} records arrived")

    def usage(self, as_user: str, **params: Any) -> requests.Response:
        return self.audit.get("api/usage", self.token(as_user), **params)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, test_vllm: str) -> Iterator[UsageStack]:
    state = tmp_path_factory.mktemp("usage")
    audit = AuditService(state)
    ws_port = free_port()
    gateway = Gateway(
        GATEWAY,
        upstream_url=test_vllm,
        key_file=os.environ["CODEYARD_TEST_VLLM_KEY_FILE"],
        args=(f"--GatewayApp.central_audit_url={audit.base}",),
    )
    site = audit.site_config(
        admin_users=["auditor"],
        writer_services=(GATEWAY,),
        spawn_events_dir=str(state / "spawn-events"),
    )
    site += local_process_workspaces(
        state,
        ws_port,
        {
            "CODEYARD_AUDIT_URL": audit.base,
            "CODEYARD_LLM_URL": gateway.url,
            "CODEYARD_LLM_MODEL": MODEL,
        },
    )
    hub = HubProcess(
        state_dir=state,
        project=False,
        admin_scopes=(*MINIMAL_ADMIN_SCOPES, "admin:servers", "admin:groups", "groups"),
        gateways={GATEWAY: gateway},
        site_config=site,
    )
    hub.start()
    audit.hub_api_url = hub.api_url
    s = UsageStack(hub, audit, state, ws_port, {})
    try:
        audit.start()
        yield s
    finally:
        for user in ("ula", "uwe"):
            with contextlib.suppress(Exception):
                s.stop(user)
        audit.stop()
        hub.stop()


@pytest.fixture(scope="module")
def run(stack: UsageStack) -> dict[str, Any]:
    """The real run the page must show: returns what happened, as the test counted it."""
    for group, user in (("team-a", "ula"), ("team-b", "uwe")):
        stack.token(user)
        stack.hub.request("POST", f"groups/{group}")
        r = stack.hub.request("POST", f"groups/{group}/users", {"users": [user]})
        assert r.status_code == 200, r.text
    stack.token("auditor")

    started = stack.start("ula")
    r = stack.ws(
        "ula",
        "PUT",
        "api/contents/calc.py",
        json=text_file(CODE),
    )
    assert r.status_code in (200, 201), r.text
    r = stack.ws(
        "ula",
        "POST",
        "codeyard/api/explain",
        json={
            "path": "calc.py",
            "start_line": 1,
            "end_line": 2,
            "max_tokens": 24,
            "context_lines": 0,
        },
    )
    assert r.status_code == 200, r.text
    explained = r.json()["usage"]
    first = stack.apply("ula", "one.py")
    stack.apply("ula", "two.py")
    r = stack.ws("ula", "POST", f"codeyard/api/patch/{first}/revert", json={})
    assert r.status_code == 200, r.text
    ula_log = stack.local_log("ula")
    stopped = stack.stop("ula")

    stack.start("uwe")
    stack.apply("uwe", "three.py")
    uwe_log = stack.local_log("uwe")
    stack.stop("uwe")

    stack.wait_central(f"ula/{WORKSPACE}", len(ula_log))
    stack.wait_central(f"uwe/{WORKSPACE}", len(uwe_log))
    stack.wait_central(f"service/{GATEWAY}", len(stack.gateway_log()))
    stack.wait_central("service/codeyard-spawn-events", 4)
    calls = [g for g in stack.gateway_log() if g["user"] == "ula"]
    return {
        "explained": explained,
        "ula_hours_max": (stopped - started + 120) / 3600,
        "tokens_in": sum(g["prompt_tokens"] for g in calls),
        "tokens_out": sum(g["completion_tokens"] for g in calls),
        "calls": len(calls),
    }


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def test_the_usage_shows_the_real_run_per_user_and_group(
    stack: UsageStack, run: dict[str, Any]
) -> None:
    spawns = stack.spawn_log()
    assert [(e["user"], e["workspace"], e["action"]) for e in spawns] == [
        ("ula", WORKSPACE, "workspace.start"),
        ("ula", WORKSPACE, "workspace.stop"),
        ("uwe", WORKSPACE, "workspace.start"),
        ("uwe", WORKSPACE, "workspace.stop"),
    ]
    r = stack.usage("auditor")
    assert r.status_code == 200, r.text
    rows = {(x["day"], x["user"]): x for x in r.json()["rows"]}
    ula = rows[(today(), "ula")]
    assert run["calls"] >= 1 and run["tokens_in"] >= run["explained"]["prompt_tokens"] > 0
    assert (ula["tokens_in"], ula["tokens_out"]) == (run["tokens_in"], run["tokens_out"])
    assert ula["requests"] == run["calls"]
    assert ula["requests_by_kind"] == {"chat/completions": run["calls"]}
    assert (ula["explain"], ula["rewrite"], ula["apply"], ula["revert"]) == (1, 0, 2, 1)
    assert 0 < ula["workspace_hours"] <= run["ula_hours_max"]
    assert ula["group"] == "team-a"
    uwe = rows[(today(), "uwe")]
    assert (uwe["explain"], uwe["apply"], uwe["revert"], uwe["tokens_in"]) == (0, 1, 0, 0)
    assert uwe["workspace_hours"] > 0

    groups = {x["group"]: x for x in stack.usage("auditor", by="group").json()["rows"]}
    assert groups["team-a"]["apply"] == 2 and groups["team-a"]["tokens_in"] == run["tokens_in"]
    assert groups["team-b"]["apply"] == 1 and groups["team-b"]["tokens_in"] == 0

    exported = stack.usage("auditor", format="csv")
    assert exported.status_code == 200 and exported.headers["Content-Type"].startswith("text/csv")
    table = {row["user"]: row for row in csv.DictReader(io.StringIO(exported.text))}
    assert int(table["ula"]["tokens_out"]) == run["tokens_out"]
    assert int(table["ula"]["apply"]) == 2 and table["ula"]["day"] == today()


def test_a_user_sees_only_their_own_usage(stack: UsageStack, run: dict[str, Any]) -> None:
    own = stack.usage("ula")
    assert own.status_code == 200
    assert {x["user"] for x in own.json()["rows"]} == {"ula"}
    assert stack.usage("ula", user="uwe").status_code == 403
    assert stack.usage("ula", by="group").json()["rows"] == []
    page = stack.audit.get("usage", stack.token("ula"))
    assert page.status_code == 200
    assert ">ula<" in page.text and "uwe" not in page.text and "team-b" not in page.text


def test_the_page_draws_charts_without_the_network_and_a_screenshot_is_saved(
    stack: UsageStack, run: dict[str, Any]
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "usage-page.png"
    external: list[str] = []
    with chromium() as browser:
        assert CHROMIUM_FLAGS
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000},
            extra_http_headers={"Authorization": f"token {stack.token('auditor')}"},
        )
        page = context.new_page()
        page.on(
            "request",
            lambda req: external.append(req.url) if "127.0.0.1" not in req.url else None,
        )
        page.goto(stack.audit.url + "usage?days=7")
        charts = page.locator("svg.usage-chart")
        assert charts.count() == 3
        assert page.locator("svg.usage-chart rect[fill='#857aab']").count() >= 1  # applies
        assert "team-a" in page.locator("table.usage-group").inner_text()
        page.screenshot(path=str(shot), full_page=True)
        context.close()
    assert external == []
    assert shot.stat().st_size > 10_000
    print(f"usage page screenshot: {shot}")
