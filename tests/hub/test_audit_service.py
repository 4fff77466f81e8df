"""The central audit end to end: a real JupyterHub, the real audit service, real workspace
servers (`jupyterhub-singleuser` with Codeyard, spawned by the Hub as local processes) that
post their records with their own Hub tokens.

No docker: the Hub is the minimal one of tests/support/hub.py with the local-process
spawner, so a workspace is one process the test can SIGKILL. The audit service runs as a
Hub service the test starts itself (`del service["command"]`, as the placement suite does),
so it can be stopped and started again; between the workspaces and the service sits a small
relay the test controls, which kills the workspace server in the middle of a send.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from support.audit_service import PREFIX as AUDIT_PREFIX
from support.audit_service import AuditService, local_process_workspaces
from support.hub import MINIMAL_ADMIN_SCOPES, Gateway, HubProcess, model_env
from support.processes import free_port

from codeyard.central_audit.store import local_hash

WORKSPACE = "ws1"
GATEWAY = "codeyard-llm"


class Relay(ThreadingHTTPServer):
    """Forwards the workspaces' POSTs to the audit service, or kills the workspace server
    (SIGKILL) with the request in flight: `mode` is "pass", "kill_before" (the service never
    sees the batch), "kill_after" (the service stored it; the answer never arrives) or "hold"
    (the POST waits for `release` before it is passed on)."""

    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), RelayHandler)
        self.target = target
        self.mode = "pass"
        self.kill: Callable[[], None] = lambda: None
        self.killed = threading.Event()
        # The kill waits for this: the forwarder may send before the patch/apply answer has
        # reached the test, and a kill then would cut that answer instead of the send.
        self.answered = threading.Event()
        self.answered.set()
        self.release = threading.Event()
        self.release.set()
        self.held = threading.Event()
        self.posts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{AUDIT_PREFIX.rstrip('/')}"


class RelayHandler(BaseHTTPRequestHandler):
    server: Relay

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        relay = self.server
        relay.posts += 1
        mode = relay.mode
        if mode == "hold":
            relay.held.set()
            relay.release.wait(60)
        elif mode != "pass":
            relay.answered.wait(30)
        if mode == "kill_before":
            relay.mode = "pass"
            relay.kill()
            relay.killed.set()
            return
        try:
            resp = requests.post(
                relay.target + self.path,
                data=body,
                headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                timeout=30,
            )
        except requests.RequestException:
            self.send_error(502)
            return
        if mode == "kill_after":
            relay.mode = "pass"
            relay.kill()
            relay.killed.set()
            return
        self.send_response(resp.status_code)
        self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(resp.content)))
        self.end_headers()
        self.wfile.write(resp.content)


@dataclass
class AuditStack:
    hub: HubProcess
    state: Path
    relay: Relay
    audit: AuditService
    ws_port: int
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.audit.url

    @property
    def db_path(self) -> Path:
        return self.audit.db_path

    def start_service(self) -> None:
        self.audit.hub_api_url = self.hub.api_url
        self.audit.start()

    def stop_service(self) -> None:
        self.audit.stop()

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = self.hub.user_token(user)
        return self.tokens[user]

    def get(self, endpoint: str, as_user: str = "auditor", **params: Any) -> requests.Response:
        return requests.get(
            self.url + endpoint,
            params=params,
            headers={"Authorization": f"token {self.token(as_user)}"},
            timeout=30,
        )

    def records(self, user: str = "alice") -> list[dict[str, Any]]:
        r = self.get("api/records", as_user=user)
        r.raise_for_status()
        return list(r.json()["records"])

    # ---- the workspace ------------------------------------------------------------------

    def home(self, user: str) -> Path:
        return self.state / "homes" / user

    def start_workspace(self, user: str) -> None:
        self.token(user)  # makes the user
        r = self.hub.request("POST", f"users/{user}/servers/{WORKSPACE}", {})
        assert r.status_code in (201, 202), r.text
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            server = self.server_model(user)
            if server and server.get("ready"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"workspace did not start:\n{self.hub.log_tail()}")

    def stop_workspace(self, user: str) -> None:
        self.hub.request("DELETE", f"users/{user}/servers/{WORKSPACE}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.server_model(user):
            time.sleep(0.5)

    def server_model(self, user: str) -> dict[str, Any] | None:
        model = self.hub.api_json("GET", f"users/{user}")
        return (model.get("servers") or {}).get(WORKSPACE)  # type: ignore[no-any-return]

    def pid(self, user: str) -> int:
        server = self.server_model(user)
        assert server is not None
        return int(server["state"]["pid"])

    def apply(self, user: str, name: str, line: str) -> dict[str, Any]:
        diff = f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1 @@\n+{line}\n"
        r = requests.post(
            f"http://127.0.0.1:{self.ws_port}/user/{user}/{WORKSPACE}/codeyard/api/patch/apply",
            json={"diff": diff},
            headers={"Authorization": f"token {self.token(user)}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def local_log(self, user: str) -> list[dict[str, Any]]:
        path = self.home(user) / ".codeyard" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def spool(self, user: str) -> list[Path]:
        folder = self.home(user) / ".codeyard" / "audit-spool"
        return sorted(folder.glob("*.json")) if folder.exists() else []

    def agreed(
        self, user: str, quiet: float = 2.0, timeout: float = 120
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The local log of `user` and the service's rows once they hold as many records
        and neither grew for `quiet` seconds. A server that (re)started, or stopped, has its
        watcher record its own runtime files a moment later (`.local/share/jupyter/runtime`,
        npm's logs): a log read before those is not the log the service ends up holding."""
        deadline = time.monotonic() + timeout
        while True:
            local = self.local_log(user)
            rows = self.wait_arrived(user, len(local), max(1.0, deadline - time.monotonic()))
            if len(rows) == len(local):
                time.sleep(quiet)
                if len(self.local_log(user)) == len(local) == len(self.records(user)):
                    return local, rows
            assert time.monotonic() < deadline, (
                f"{user}: the service holds {len(rows)} records, the local log {len(local)}"
            )
            time.sleep(0.5)

    def wait_arrived(self, user: str, count: int, timeout: float = 90) -> list[dict[str, Any]]:
        """Records of `user` once the service holds `count` and the spool is empty."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.records(user)
            if len(rows) >= count and not self.spool(user):
                return rows
            time.sleep(0.5)
        raise AssertionError(f"{len(rows)} of {count} records arrived; spool {self.spool(user)}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditStack]:
    state = tmp_path_factory.mktemp("audit")
    audit = AuditService(state)
    relay = Relay(f"http://127.0.0.1:{audit.port}")
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    ws_port = free_port()
    # The LLM gateway sends its records to the same service. It needs the run's vLLM: a
    # call the gateway refuses before forwarding (no model list from a closed port: 503)
    # is counted in its metrics but leaves no audit row.
    model = model_env()
    gateway = Gateway(
        GATEWAY,
        upstream_url=model["CODEYARD_VLLM_URL"],
        key_file=model.get("CODEYARD_VLLM_KEY_FILE", ""),
        args=(f"--GatewayApp.central_audit_url={audit.base}",),
    )
    site = audit.site_config(admin_users=["auditor"], writer_services=(GATEWAY,))
    site += local_process_workspaces(state, ws_port, {"CODEYARD_AUDIT_URL": relay.url})
    hub = HubProcess(
        state_dir=state,
        project=False,
        admin_scopes=(*MINIMAL_ADMIN_SCOPES, "admin:servers", "admin:server_state"),
        gateways={GATEWAY: gateway},
        site_config=site,
    )
    hub.start()
    s = AuditStack(hub, state, relay, audit, ws_port)
    try:
        s.start_service()
        yield s
    finally:
        for user in ("alice", "bob"):
            with contextlib.suppress(Exception):
                s.stop_workspace(user)
        s.stop_service()
        hub.stop()
        relay.shutdown()


@pytest.fixture(scope="module")
def alice(stack: AuditStack) -> str:
    stack.token("auditor")
    stack.start_workspace("alice")
    return "alice"


def test_records_arrive_with_their_seq_and_a_resend_stores_nothing_twice(
    stack: AuditStack, alice: str
) -> None:
    for n in range(3):
        stack.apply(alice, f"first{n}.txt", "x")
    local, rows = stack.agreed(alice)
    assert [(r["seq"], r["record_hash"]) for r in rows] == [(r["seq"], r["hash"]) for r in local]
    assert {r["workspace"] for r in rows} == {WORKSPACE}
    assert {r["user"] for r in rows} == {alice}
    assert {r["action"] for r in rows} >= {"patch.apply"}

    # The same batch again, with the workspace server's own token (read from its process).
    environ = Path(f"/proc/{stack.pid(alice)}/environ").read_bytes().split(b"\0")
    server_token = next(
        v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"JUPYTERHUB_API_TOKEN=")
    )
    batch = [
        {"epoch": local[0]["hash"], "seq": r["seq"], "hash": r["hash"], "record": r} for r in local
    ]
    r = requests.post(
        stack.url + "api/records",
        json={"records": batch},
        headers={"Authorization": f"token {server_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert {x["status"] for x in r.json()["results"]} == {"duplicate"}
    assert r.json()["source"] == f"{alice}/{WORKSPACE}"
    assert len(stack.records(alice)) == len(local)

    # A user's own token is not a workspace's: it may not write.
    r = requests.post(
        stack.url + "api/records",
        json={"records": batch},
        headers={"Authorization": f"token {stack.token(alice)}"},
        timeout=30,
    )
    assert r.status_code == 403


def _exactly_once(stack: AuditStack, user: str) -> None:
    local, rows = stack.agreed(user)
    keys = [(r["epoch"], r["seq"]) for r in rows]
    assert len(keys) == len(set(keys)), "a record was stored twice"
    assert sorted(r["seq"] for r in rows) == [r["seq"] for r in local]
    assert {r["seq"]: r["record_hash"] for r in rows} == {r["seq"]: r["hash"] for r in local}


def test_service_down_records_wait_in_the_spool_then_arrive_once(
    stack: AuditStack, alice: str
) -> None:
    def applies(rows: list[dict[str, Any]]) -> int:
        return sum(r["action"] == "patch.apply" for r in rows)

    before = applies(stack.records(alice))
    stack.stop_service()
    try:
        for n in range(3):
            stack.apply(alice, f"down{n}.txt", "y")
        time.sleep(1.5)
        # The watcher may spool records of its own beside the three applies.
        spooled = [json.loads(p.read_text())["record"] for p in stack.spool(alice)]
        assert applies(spooled) == 3, [r["action"] for r in spooled]
    finally:
        stack.start_service()
    _exactly_once(stack, alice)
    assert applies(stack.records(alice)) == before + 3


@pytest.mark.parametrize("mode", ["kill_before", "kill_after"])
def test_workspace_killed_in_the_middle_of_a_send(stack: AuditStack, alice: str, mode: str) -> None:
    """SIGKILL of the workspace server while its batch is in flight: before the service saw
    it, or after the service stored it but before the answer came back. After a restart the
    spool is sent again and the service holds each record exactly once."""
    pid = stack.pid(alice)
    stack.relay.kill = lambda: os.kill(pid, signal.SIGKILL)
    stack.relay.killed.clear()
    stack.relay.answered.clear()
    stack.relay.mode = mode
    stack.apply(alice, f"{mode}.txt", "z")
    stack.relay.answered.set()
    assert stack.relay.killed.wait(30), "the forwarder never sent"
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the workspace server survived SIGKILL")
    assert stack.spool(alice), "the unacknowledged record must still be spooled"
    stack.stop_workspace(alice)
    stack.start_workspace(alice)
    _exactly_once(stack, alice)


def test_a_clean_stop_sends_what_is_still_spooled(stack: AuditStack, alice: str) -> None:
    """Changes made just before a stop reach the service during the stop, not at some later
    start: the relay holds the sender's first batch while more records spool behind it, the
    Hub stops the workspace, and only then is the batch let through."""
    relay = stack.relay
    relay.held.clear()
    relay.release.clear()
    relay.mode = "hold"
    stopper = threading.Thread(target=stack.stop_workspace, args=(alice,), daemon=True)
    try:
        for n in range(3):
            stack.apply(alice, f"late{n}.txt", "s")
        assert relay.held.wait(30), "the forwarder never sent"
        assert len(stack.spool(alice)) >= 3, "the later records must wait in the spool"
        local = stack.local_log(alice)
        stopper.start()
        time.sleep(1.5)  # the stop has reached the server; its sender is still held
        assert stack.spool(alice), "nothing may be sent while the relay holds"
    finally:
        relay.mode = "pass"
        relay.release.set()
    stopper.join(90)
    assert not stack.server_model(alice), "the workspace did not stop"
    assert not stack.spool(alice), f"left in the spool after a clean stop: {stack.spool(alice)}"
    arrived = {r["seq"] for r in stack.records(alice)}
    assert {r["seq"] for r in local} <= arrived
    stack.start_workspace(alice)
    _exactly_once(stack, alice)


def _rechain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recompute the local (unkeyed) chain, as someone rewriting the log would."""
    prev = "0" * 64
    out = []
    for r in records:
        r = {**r, "prev": prev}
        r["hash"] = local_hash(r)
        prev = r["hash"]
        out.append(r)
    return out


def _verify_local(stack: AuditStack, user: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    r = requests.post(
        stack.url + "api/verify-local",
        json={"user": user, "workspace": WORKSPACE, "log": text},
        headers={"Authorization": f"token {stack.token('auditor')}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_verification_finds_truncation_rewrite_unsent_records_and_gaps(
    stack: AuditStack, alice: str
) -> None:
    local, _ = stack.agreed(alice)
    assert _verify_local(stack, alice, local)["ok"] is True

    truncated = _verify_local(stack, alice, local[:-2])
    assert truncated["truncated"]["records_gone"] == 2
    assert truncated["truncated"]["local_last_seq"] == local[-3]["seq"]

    edited = [dict(r) for r in local]
    edited[1]["paths"] = ["innocent.txt"]
    rewritten = _verify_local(stack, alice, _rechain(edited))
    assert rewritten["rewritten"] == [r["seq"] for r in local[1:]]
    assert rewritten["truncated"] is None

    extra = _rechain([*local, {**local[-1], "seq": local[-1]["seq"] + 1, "paths": ["new.txt"]}])
    unsent = _verify_local(stack, alice, extra)
    assert unsent["missing_at_service"] == [local[-1]["seq"] + 1]
    assert unsent["rewritten"] == []

    # A record deleted at the service: a gap in its sequence, and its MAC chain breaks.
    import sqlite3

    with sqlite3.connect(stack.db_path) as db:
        db.execute("PRAGMA foreign_keys=ON")
        db.execute(
            "DELETE FROM codeyard_audit_records WHERE seq = 2 AND workspace = ?", (WORKSPACE,)
        )
    gap = _verify_local(stack, alice, local)
    assert gap["gaps"]["service"] == [[2, 2]]
    assert gap["missing_at_service"] == [2]
    chains = stack.get("api/chains").json()["chains"]
    chain = next(c for c in chains if c["source"] == f"{alice}/{WORKSPACE}")
    assert chain["gaps"] == 1 and chain["epochs"][0]["gaps"] == [[2, 2]]
    assert chain["mac_ok"] is False and chain["problems"]


def test_export_verifies_with_the_public_key_alone_and_filters(
    stack: AuditStack, alice: str, tmp_path: Path
) -> None:
    stack.apply(alice, "exported.txt", "e")
    stack.wait_arrived(alice, len(stack.local_log(alice)) - 1)  # seq 2 was deleted above
    export = stack.get("api/records", format="jsonl", user=alice)
    assert export.status_code == 200
    (tmp_path / "export.jsonl").write_bytes(export.content)
    key = requests.get(stack.url + "api/public-key", timeout=10)
    (tmp_path / "public.pem").write_bytes(key.content)

    def verify(path: Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "codeyard.central_audit", "verify", "--export", str(path)]
        cmd += ["--public-key", str(tmp_path / "public.pem")]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    # Only the rows after the record deleted at the service link up to the checkpoint; the
    # export of another, untouched workspace verifies in full.
    # (One workspace runs at a time: the test's servers share one port.)
    stack.stop_workspace(alice)
    stack.start_workspace("bob")
    try:
        for n in range(2):
            stack_apply_as(stack, "bob", f"b{n}.txt")
        stack.wait_arrived("bob", len(stack.local_log("bob")))
    finally:
        stack.stop_workspace("bob")
        stack.start_workspace(alice)
    bob = stack.get("api/records", format="jsonl", user="bob").content
    (tmp_path / "bob.jsonl").write_bytes(bob)
    ok = verify(tmp_path / "bob.jsonl")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["covered"] == json.loads(ok.stdout)["rows"] > 0

    lines = [json.loads(line) for line in bob.splitlines()]
    # The first patch record (the workspace's watcher may have written others before it).
    first = next(x for x in lines if x["kind"] == "record" and '"patch.apply"' in x["body"])
    first["body"] = first["body"].replace('"patch.apply"', '"patch.revert"')
    (tmp_path / "forged.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    bad = verify(tmp_path / "forged.jsonl")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["problems"]

    # Users read their own records only; admins filter everyone's.
    assert {r["user"] for r in stack.records("bob")} == {"bob"}
    assert stack.get("api/records", as_user="bob", user=alice).status_code == 403
    only = stack.get("api/records", action="patch.apply").json()["records"]
    assert {r["user"] for r in only} >= {alice, "bob"}
    by_path = stack.get("api/records", path="b1.txt").json()["records"]
    assert [(r["user"], json.loads(r["body"])["record"]["paths"]) for r in by_path] == [
        ("bob", ["b1.txt"])
    ]
    csv_rows = list(csv.DictReader(io.StringIO(stack.get("api/records", format="csv").text)))
    assert {r["user"] for r in csv_rows} >= {alice, "bob"}

    page = stack.get("", workspace=WORKSPACE)
    assert page.status_code == 200
    assert "Chains" in page.text and f"{alice}</td>" in page.text and "format=jsonl" in page.text
    own = stack.get("", as_user="bob")
    assert own.status_code == 200 and f"{alice}</td>" not in own.text


def stack_apply_as(stack: AuditStack, user: str, name: str) -> None:
    stack.apply(user, name, "b")


def test_no_marker_leaks_into_the_service_database_or_exports(
    stack: AuditStack, alice: str
) -> None:
    """Code a patch adds never reaches the central audit: not its database (with its WAL),
    not its JSONL or CSV exports, not the workspace's spool. Nor does a prompt sent through
    the LLM gateway, whose records reach the same service."""
    markers = [f"MARKER-{uuid.uuid4().hex}" for _ in range(3)]
    for n, marker in enumerate(markers):
        stack.apply(alice, f"leak{n}.txt", marker)
    stack.wait_arrived(alice, len(stack.local_log(alice)) - 1)  # seq 2 was deleted above
    prompt_marker = f"MARKER-{uuid.uuid4().hex}"
    gateway_url = stack.hub.gateways[GATEWAY].url
    carol = stack.hub.user_token("carol", ["custom:codeyard-llm"])
    sent = requests.post(
        f"{gateway_url}/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": f"Repeat {prompt_marker}"}],
            "max_tokens": 8,
        },
        headers={"Authorization": f"Bearer {carol}"},
        timeout=120,
    )
    assert sent.status_code in (200, 503), sent.text
    deadline = time.monotonic() + 60
    while not stack.records("carol") and time.monotonic() < deadline:
        time.sleep(0.5)
    (gateway_row,) = stack.records("carol")
    assert gateway_row["source"] == f"service/{GATEWAY}"
    assert json.loads(gateway_row["body"])["record"]["prompt_sha256"]
    exports = [stack.get("api/records", format=fmt).content for fmt in ("jsonl", "csv", "json")]
    stored = [p.read_bytes() for p in stack.state.glob("audit.sqlite*")]
    spooled = [p.read_bytes() for p in stack.spool(alice)]
    assert stored and exports
    for marker in markers:
        assert (stack.home(alice) / f"leak{markers.index(marker)}.txt").read_text().strip() == (
            marker
        )
        for blob in [*exports, *stored, *spooled]:
            assert marker.encode() not in blob
    gateway_spool = stack.state / f"{GATEWAY}-audit-spool"
    gateway_files = [stack.state / f"{GATEWAY}-audit.jsonl", *gateway_spool.glob("*.json")]
    for blob in [*exports, *stored, *(p.read_bytes() for p in gateway_files)]:
        assert prompt_marker.encode() not in blob
