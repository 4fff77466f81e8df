"""The gateway's own cost and the settings that trade it against freshness: reused upstream
connections, per-request overhead in audit and metrics, the token cache age, and dropping
the upstream call when the caller goes away. Real Hub, real vLLM."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from test_gateway import CHAT, metric
from traitlets import TraitError

from codeyard.gateway.app import GatewayApp

SCOPE = "custom:codeyard-llm"


def scrape(base: str, hub: Any) -> str:
    r = requests.get(
        f"{base}/metrics", headers={"Authorization": f"token {hub.admin_token}"}, timeout=10
    )
    assert r.status_code == 200
    return r.text


def connections_opened(base: str, hub: Any) -> float:
    """`codeyard_llm_upstream_connections_total` (no labels, so not for `metric`)."""
    for line in scrape(base, hub).splitlines():
        if line.startswith("codeyard_llm_upstream_connections_total "):
            return float(line.split()[1])
    raise AssertionError("codeyard_llm_upstream_connections_total is missing")


def test_token_cache_age_defaults_to_30_s_and_is_what_hubauth_uses() -> None:
    app = GatewayApp()
    assert app.token_cache_seconds == 30
    assert app.hub_auth.cache_max_age == 30
    assert GatewayApp(token_cache_seconds=5).hub_auth.cache_max_age == 5
    with pytest.raises(TraitError, match="token_cache_seconds must be >= 0"):
        GatewayApp(token_cache_seconds=-1)


def test_consecutive_calls_reuse_one_upstream_connection(llm: Any, gateway: str, hub: Any) -> None:
    llm("GET", "models")  # make sure a pooled connection exists
    before = connections_opened(gateway, hub)
    for _ in range(4):
        assert llm("GET", "models").status_code == 200
        r = llm("POST", "completions", json={"model": "smollm2", "prompt": "x", "max_tokens": 2})
        assert r.status_code == 200
    after = connections_opened(gateway, hub)
    # Eight calls; at most one new connection (if the pooled one had just aged out).
    assert after - before <= 1, (before, after)


def test_a_connection_vllm_closed_while_idle_is_replaced(llm: Any, hub: Any) -> None:
    tuned = hub.gateways["codeyard-llm-tuned"].url
    assert llm("GET", "models", base=tuned).status_code == 200
    time.sleep(6.5)  # past vLLM's 5 s keep-alive: it has closed our idle connection
    before = connections_opened(tuned, hub)
    r = llm("POST", "chat/completions", base=tuned, json={**CHAT, "max_tokens": 4})
    assert r.status_code == 200, r.text
    after = connections_opened(tuned, hub)
    assert after == before + 1


def test_audit_and_metrics_hold_the_gateways_own_time(
    llm: Any, gateway: str, hub: Any, audit_rows: Any
) -> None:
    stages = ("forward", "first_chunk")
    before = scrape(gateway, hub)
    seen = len(audit_rows("codeyard-llm"))
    r = llm("POST", "chat/completions", json={**CHAT, "stream": True}, stream=True)
    assert r.status_code == 200 and r.content
    time.sleep(0.3)  # the row is written after the answer has gone out
    row = audit_rows("codeyard-llm")[seen:][-1]
    assert row["status"] == 200
    # Both are measured, and both are far below the model's own time to first token.
    assert 0 < row["forward_ms"] < row["ttft_ms"]
    assert 0 < row["first_chunk_ms"] < row["ttft_ms"]
    assert isinstance(row["upstream_new_connection"], bool)
    after = scrape(gateway, hub)
    name = "codeyard_llm_gateway_overhead_seconds_count"
    for stage in stages:
        assert metric(after, name, stage=stage) > metric(before, name, stage=stage)


def test_a_revoked_token_stops_working_once_its_cache_entry_ages_out(llm: Any, hub: Any) -> None:
    tuned = hub.gateways["codeyard-llm-tuned"].url
    hub.user_token("erin", [SCOPE])  # creates the user
    made = hub.api("POST", "users/erin/tokens", {"note": "revoke-me", "scopes": [SCOPE]})
    assert llm("GET", "models", base=tuned, token=made["token"]).status_code == 200
    hub.api("DELETE", f"users/erin/tokens/{made['id']}")
    time.sleep(1.5)  # codeyard-llm-tuned caches the Hub's answer for 1 s
    r = llm("GET", "models", base=tuned, token=made["token"])
    assert r.status_code == 401
    assert "not valid" in r.json()["error"]["message"]


def test_a_caller_that_goes_away_stops_the_upstream_call(
    gateway: str, token: str, audit_rows: Any
) -> None:
    seen = len(audit_rows("codeyard-llm"))
    body = {
        **CHAT,
        "max_tokens": 400,
        "stream": True,
        "messages": [{"role": "user", "content": "Count from 1 to 300, one number per line."}],
    }
    r = requests.post(
        f"{gateway}/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        data=json.dumps(body),
        stream=True,
        timeout=120,
    )
    assert r.status_code == 200
    next(r.iter_content(chunk_size=None))
    r.close()  # hang up after the first chunk
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rows:
        rows = [row for row in audit_rows("codeyard-llm")[seen:] if row["user"] == "alice"]
        time.sleep(0.2)
    assert rows, "no audit row for the abandoned call"
    assert rows[0]["status"] == 499
    assert rows[0]["error"] == "client_gone"
