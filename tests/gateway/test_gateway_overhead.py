"""The gateway's own cost and the settings that trade it against freshness: reused upstream
connections, per-request overhead in audit and metrics, the token cache age, and dropping
the upstream call when the caller goes away. Real Hub, real vLLM."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import requests
from test_gateway import CHAT, metric
from traitlets import TraitError

from codeyard.gateway.app import GatewayApp
from codeyard.gateway.token_cache import TokenCache

SCOPE = "custom:codeyard-llm"


def scrape(base: str, hub: Any) -> str:
    r = requests.get(
        f"{base}/metrics", headers={"Authorization": f"token {hub.admin_token}"}, timeout=10
    )
    assert r.status_code == 200
    return r.text


def connections_opened(base: str, hub: Any, name: str = "connections") -> float:
    """`codeyard_llm_upstream_<name>_total` (no labels, so not for `metric`)."""
    series = f"codeyard_llm_upstream_{name}_total "
    for line in scrape(base, hub).splitlines():
        if line.startswith(series):
            return float(line.split()[1])
    raise AssertionError(f"{series}is missing")


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


def test_idle_connections_are_renewed_past_vllms_keep_alive(
    gateway: str, token: str, hub: Any
) -> None:
    small = {"model": "smollm2", "prompt": "x", "max_tokens": 2}
    with requests.Session() as session:  # one connection: the same gateway worker each time

        def call() -> None:
            r = session.post(
                f"{gateway}/v1/completions",
                headers={"Authorization": f"Bearer {token}"},
                json=small,
                timeout=120,
            )
            assert r.status_code == 200, r.text

        call()  # the worker now has a connection to vLLM, idle from here on
        opened = connections_opened(gateway, hub)
        warmed = connections_opened(gateway, hub, "connections_warmed")
        time.sleep(6.5)  # vLLM closes a connection idle for 5 s; ours is renewed before
        call()
    assert connections_opened(gateway, hub) == opened  # the call found one open
    assert connections_opened(gateway, hub, "connections_warmed") > warmed


def test_token_answers_are_renewed_ahead_and_never_used_past_their_age() -> None:
    """The cache alone, with a stand-in clock and Hub so that ages are exact; the real Hub
    path is in the revocation test below."""
    now = [0.0]
    valid = {"t": True}
    asked: list[float] = []
    scope_checks: list[str] = []

    async def hub_lookup(token: str) -> dict[str, Any] | None:
        asked.append(now[0])
        if valid.get(token) is None:
            raise ConnectionError("the Hub is down")
        return {"name": "u", "scopes": [SCOPE]} if valid[token] else None

    def allowed(user: dict[str, Any]) -> bool:
        scope_checks.append(user["name"])
        return SCOPE in user["scopes"]

    async def scenario() -> None:
        cache = TokenCache(hub_lookup, allowed, max_age=30, clock=lambda: now[0])

        async def at(t: float) -> Any:
            now[0] = t
            answer = await cache.answer("t")
            for _ in range(3):  # let a renewal started by this call run
                await asyncio.sleep(0)
            return answer

        assert (await at(0)).allowed and asked == [0]
        assert (await at(10)).user is not None and asked == [0]  # fresh: no lookup
        assert (await at(16)).allowed and asked == [0, 16]  # past half its age: renewed
        valid["t"] = False  # revoked at the Hub
        served = await at(40)  # the answer of t=16 is 24 s old: still used, and renewed
        assert served.user is not None and asked == [0, 16, 40]
        assert (await at(41)).user is None  # the renewal's answer: not valid
        assert scope_checks == ["u", "u"]  # once per valid answer, not per call
        valid["t"] = True
        await at(80)  # expired: asked on the call's path
        assert asked[-1] == 80
        del valid["t"]  # the Hub is down from here on
        assert (await at(96)).user is not None  # renewal fails; the t=80 answer is kept
        assert asked[-1] == 96
        with pytest.raises(ConnectionError):
            await at(110.5)  # never past max_age, not even when the Hub is down

    asyncio.run(scenario())


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


def test_the_audit_holds_vllms_own_time_to_first_chunk(llm: Any, audit_rows: Any) -> None:
    seen = len(audit_rows("codeyard-llm"))
    r = llm("POST", "chat/completions", json={**CHAT, "stream": True}, stream=True)
    assert r.status_code == 200 and r.content
    time.sleep(0.3)  # the row is written after the answer has gone out
    row = audit_rows("codeyard-llm")[seen:][-1]
    # From sending the call to vLLM to its first chunk: inside the caller's TTFT, which
    # also holds the hop through the gateway (the benchmark subtracts the two).
    assert 0 < row["upstream_ttft_ms"] < row["ttft_ms"]
    # What is left of the caller's TTFT before the call went to vLLM is part of forward_ms
    # (which also counts tornado reading the request before the handler ran).
    assert row["ttft_ms"] - row["upstream_ttft_ms"] <= row["forward_ms"] + 0.01


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


def test_a_token_answer_used_past_half_its_age_is_renewed_ahead(llm: Any, hub: Any) -> None:
    """Real Hub, one worker (one kept-alive connection). The cache keeps answers 1 s; a
    call that finds one past 0.5 s is served from it and renews it in the background: the
    renewal learns of the revocation, so the token is refused before the first answer's
    1 s are up. Without renewal ahead it would keep working until then."""
    tuned = hub.gateways["codeyard-llm-tuned"].url
    hub.user_token("frank", [SCOPE])  # creates the user
    made = hub.api("POST", "users/frank/tokens", {"note": "renew-me", "scopes": [SCOPE]})
    headers = {"Authorization": f"Bearer {made['token']}"}
    with requests.Session() as session:
        first = time.monotonic()  # before the Hub's answer was taken: it expires after +1 s
        assert session.get(f"{tuned}/v1/models", headers=headers, timeout=30).status_code == 200
        hub.api("DELETE", f"users/frank/tokens/{made['id']}")
        time.sleep(max(0.0, first + 0.55 - time.monotonic()))
        # Past half its age: served from the cache, renewed in the background.
        assert session.get(f"{tuned}/v1/models", headers=headers, timeout=30).status_code == 200
        refused_at = None
        while time.monotonic() < first + 0.95:
            r = session.get(f"{tuned}/v1/models", headers=headers, timeout=30)
            if r.status_code == 401:
                refused_at = time.monotonic() - first
                break
            time.sleep(0.02)
    assert refused_at is not None, "the token still worked 0.95 s after the Hub's answer"


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
