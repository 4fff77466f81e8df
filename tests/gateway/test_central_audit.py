"""The gateway's records in the central audit: a real JupyterHub running the gateway as a
managed service in front of the shared vLLM, and the real audit service (run by the test as
a Hub service, so it can be stopped). The gateway posts with its own Hub token through a
spool, as workspaces do; records hold token counts and hashes, never text.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from support.audit_service import AuditService
from support.hub import Gateway, JsonApiHub
from support.llm_stack import MODEL, Vllm

GATEWAY = "codeyard-llm"
SCOPE = "custom:codeyard-llm"


@dataclass
class Stack:
    hub: JsonApiHub
    audit: AuditService
    gateway: Gateway
    auditor: str
    alice: str

    @property
    def log_path(self) -> Path:
        return self.hub.workdir / f"{GATEWAY}-audit.jsonl"

    @property
    def spool_dir(self) -> Path:
        return self.hub.workdir / f"{GATEWAY}-audit-spool"

    def spool(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*.json")) if self.spool_dir.exists() else []

    def local(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text() if self.log_path.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def chat(self, content: str) -> tuple[list[dict[str, str]], str]:
        messages = [{"role": "user", "content": content}]
        r = requests.post(
            f"{self.gateway.url}/v1/chat/completions",
            json={"model": MODEL, "messages": messages, "max_tokens": 8, "temperature": 0},
            headers={"Authorization": f"Bearer {self.alice}"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        return messages, str(r.json()["choices"][0]["message"]["content"])

    def central(self) -> list[dict[str, Any]]:
        r = self.audit.get("api/records", self.auditor, user="alice")
        assert r.status_code == 200, r.text
        return list(r.json()["records"])

    def wait_arrived(self, timeout: float = 60) -> list[dict[str, Any]]:
        """The gateway's records at the service once it holds every local one."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = [r for r in self.central() if r["source"] == f"service/{GATEWAY}"]
            if len(rows) >= len(self.local()) and not self.spool():
                return rows
            time.sleep(0.3)
        raise AssertionError(f"{len(rows)} of {len(self.local())} records arrived")


@pytest.fixture(scope="module")
def stack(vllm: Vllm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("gateway-central-audit")
    audit = AuditService(state)
    gateway = Gateway(
        GATEWAY,
        upstream_url=vllm.url,
        key_file=str(vllm.key_file),
        args=(f"--GatewayApp.central_audit_url={audit.base}",),
    )
    hub = JsonApiHub(
        state_dir=state,
        gateways={GATEWAY: gateway},
        site_config="c.Authenticator.allow_all = True\n"
        + audit.site_config(admin_users=["auditor"], writer_services=(GATEWAY,)),
    )
    hub.start()
    audit.hub_api_url = hub.api_url
    try:
        audit.start()
        yield Stack(
            hub, audit, gateway, hub.user_token("auditor"), hub.user_token("alice", [SCOPE])
        )
    finally:
        audit.stop()
        hub.stop()


def test_a_call_arrives_in_the_central_audit_with_counts_and_hashes(stack: Stack) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    messages, answer = stack.chat(f"Say hello. {marker}")
    prompt = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    prompt_sha = hashlib.sha256(prompt.encode()).hexdigest()
    rows = stack.wait_arrived()
    mine = [r for r in rows if json.loads(r["body"])["record"]["prompt_sha256"] == prompt_sha]
    assert len(mine) == 1
    row = mine[0]
    record = json.loads(row["body"])["record"]
    assert row["user"] == "alice" and row["action"] == "llm.chat/completions"
    assert row["outcome"] == "ok"
    assert record["answer_sha256"] == hashlib.sha256(answer.encode()).hexdigest()
    assert record["prompt_tokens"] > 0 and record["completion_tokens"] > 0
    assert record["status"] == 200 and record["model"] == MODEL
    # the same record as the gateway's local chained log, by seq and hash
    local = {r["seq"]: r["hash"] for r in stack.local()}
    assert local[row["seq"]] == row["record_hash"]
    assert row["epoch"] == stack.local()[0]["hash"]
    # hash-only: neither the prompt nor the answer text is stored or exported
    export = stack.audit.get("api/records", stack.auditor, format="jsonl").content
    stored = b"".join(p.read_bytes() for p in stack.audit.state.glob("audit.sqlite*"))
    for blob in (export, stored, stack.log_path.read_bytes()):
        assert marker.encode() not in blob
    # alice reads her own calls; the chain of the gateway is one, and verifies
    assert stack.audit.get("api/records", stack.alice).status_code == 200
    chains = stack.audit.get("api/chains", stack.auditor).json()["chains"]
    chain = next(c for c in chains if c["source"] == f"service/{GATEWAY}")
    assert chain["mac_ok"] is True and chain["gaps"] == 0


def test_records_wait_in_the_spool_while_the_service_is_down(stack: Stack) -> None:
    before = len(stack.wait_arrived())
    stack.audit.stop()
    try:
        for n in range(2):
            stack.chat(f"Count to {n + 2}.")
        deadline = time.monotonic() + 10
        while len(stack.spool()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(stack.spool()) == 2
        time.sleep(1.5)  # the sender retries against the closed port; nothing is lost
        assert len(stack.spool()) == 2
    finally:
        stack.audit.start()
    rows = stack.wait_arrived(timeout=90)
    assert len(rows) == before + 2
    keys = [(r["epoch"], r["seq"]) for r in rows]
    assert len(keys) == len(set(keys)), "a record was stored twice"
    assert sorted(r["seq"] for r in rows) == [r["seq"] for r in stack.local()]
