"""The LLM gateway against a real JupyterHub and a real vLLM serving SmolLM2."""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

CHAT = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 24,
}


def sse_events(resp: requests.Response) -> tuple[int, list[str]]:
    """(number of network chunks received, list of `data:` payloads)."""
    chunks = 0
    buf = b""
    for chunk in resp.iter_content(chunk_size=None):
        chunks += 1
        buf += chunk
    events = [
        line[5:].strip().decode()
        for line in buf.split(b"\n")
        if line.startswith(b"data:") and line[5:].strip()
    ]
    return chunks, events


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_no_token_gives_401(llm: Any) -> None:
    r = llm("GET", "models", token=None)
    assert r.status_code == 401
    assert "token" in r.json()["error"]["message"]


def test_bad_token_gives_401(llm: Any) -> None:
    r = llm("POST", "chat/completions", token="not-a-real-token", json=CHAT)
    assert r.status_code == 401


def test_token_without_the_llm_scope_gives_403(llm: Any, hub: Any) -> None:
    weak = hub.user_token("alice", ["users:activity!user"])
    r = llm("POST", "chat/completions", token=weak, json=CHAT)
    assert r.status_code == 403
    assert "custom:codeyard-llm" in r.json()["error"]["message"]


def test_paths_outside_the_allow_list_give_404(llm: Any, gateway: str, token: str) -> None:
    assert llm("POST", "embeddings", json={"input": "x"}).status_code == 404
    assert llm("POST", "responses", json=CHAT).status_code == 404
    assert llm("GET", "chat/completions").status_code == 404
    auth = {"Authorization": f"Bearer {token}"}
    for path in ("/tokenize", "/metrics/../tokenize", "/invocations"):
        assert requests.post(gateway + path, headers=auth, timeout=10).status_code == 404


def test_models_lists_the_served_model(llm: Any) -> None:
    r = llm("GET", "models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["smollm2"]


def test_the_hub_proxy_prefix_route_works_too(gateway: str, token: str) -> None:
    r = requests.get(
        f"{gateway}/services/codeyard-llm/v1/models",
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )
    assert r.status_code == 200


def test_chat_answers_with_text_and_usage(llm: Any) -> None:
    r = llm("POST", "chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] > 0


def test_stream_arrives_in_several_chunks_and_ends_with_done(llm: Any) -> None:
    r = llm(
        "POST", "chat/completions", json={**CHAT, "max_tokens": 40, "stream": True}, stream=True
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    chunks, events = sse_events(r)
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e) for e in events[:-1]]
    text = "".join(
        (c.get("delta") or {}).get("content") or "" for d in deltas for c in d["choices"]
    )
    assert text.strip()
    assert len(deltas) > 3
    assert chunks > 1, "the answer was buffered into one chunk"
    assert deltas[-1]["usage"]["completion_tokens"] > 0


def test_completions_endpoint_is_forwarded(llm: Any) -> None:
    r = llm(
        "POST",
        "completions",
        json={"model": "smollm2", "prompt": "def add(a, b):", "max_tokens": 8},
    )
    assert r.status_code == 200
    assert r.json()["choices"][0]["text"]


def test_oversized_body_gives_413(llm: Any, strict_gateway: str) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    r = llm("POST", "chat/completions", base=strict_gateway, json=big)
    assert r.status_code == 413
    assert "2000" in r.json()["error"]["message"]


def test_max_tokens_is_capped(llm: Any, strict_gateway: str, hub: Any) -> None:
    dave = hub.user_token("dave", ["custom:codeyard-llm"])
    ask = {**CHAT, "max_tokens": 500, "messages": [{"role": "user", "content": "Count to 100."}]}
    r = llm("POST", "chat/completions", base=strict_gateway, token=dave, json=ask)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 8


def test_too_many_concurrent_requests_give_429(llm: Any, strict_gateway: str, hub: Any) -> None:
    bob = hub.user_token("bob", ["custom:codeyard-llm"])
    llm("GET", "models", base=strict_gateway, token=bob)  # warm the token cache

    def one(_: int) -> requests.Response:
        return llm("POST", "chat/completions", base=strict_gateway, token=bob, json=CHAT)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(4)))
    refused = [r for r in answers if r.status_code == 429]
    assert refused, [r.status_code for r in answers]
    assert any("concurrent" in r.json()["error"]["message"] for r in refused)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert any(r.status_code == 200 for r in answers)


def test_token_budget_per_minute_gives_429_with_retry_after(
    llm: Any, strict_gateway: str, hub: Any
) -> None:
    carol = hub.user_token("carol", ["custom:codeyard-llm"])
    statuses = []
    for _ in range(6):
        r = llm("POST", "chat/completions", base=strict_gateway, token=carol, json=CHAT)
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[0] == 200
    assert statuses[-1] == 429, statuses
    assert "token budget" in r.json()["error"]["message"]
    # The ledger keeps its window in whole seconds: a charge counts for 60 to 61 s.
    assert 1 <= int(r.headers["Retry-After"]) <= 61


def test_vllm_down_gives_503_with_a_clear_message(llm: Any, down_gateway: str) -> None:
    r = llm("POST", "chat/completions", base=down_gateway, json=CHAT)
    assert r.status_code == 503
    assert "not reachable" in r.json()["error"]["message"]


def test_upstream_timeout_gives_504(llm: Any, slow_gateway: str) -> None:
    r = llm("POST", "chat/completions", base=slow_gateway, json={**CHAT, "max_tokens": 200})
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"


def test_audit_rows_hold_hashes_and_counts_never_text(llm: Any, audit_rows: Any, hub: Any) -> None:
    marker = "zebra-quartz-4711"
    messages = [{"role": "user", "content": f"Repeat the word {marker}."}]
    r = llm("POST", "chat/completions", json={**CHAT, "messages": messages})
    answer = r.json()["choices"][0]["message"]["content"]
    rows = audit_rows("codeyard-llm")
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    mine = [r for r in rows if r["prompt_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()]
    assert len(mine) == 1
    row = mine[0]
    assert row["user"] == "alice"
    assert row["model"] == "smollm2"
    assert row["status"] == 200
    assert row["answer_sha256"] == hashlib.sha256(answer.encode()).hexdigest()
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert row["latency_ms"] > 0
    raw = (hub.workdir / "codeyard-llm-audit.jsonl").read_text()
    assert marker not in raw
    assert not re.search(r'"(content|messages|prompt|text)"', raw)


def test_metrics_count_requests_tokens_errors_and_ttft(llm: Any, gateway: str, hub: Any) -> None:
    admin = {"Authorization": f"token {hub.admin_token}"}

    def scrape() -> str:
        r = requests.get(f"{gateway}/metrics", headers=admin, timeout=10)
        assert r.status_code == 200
        return r.text

    before = scrape()
    streamed = llm("POST", "chat/completions", json={**CHAT, "stream": True}, stream=True)
    assert streamed.content
    llm("POST", "embeddings", json={})
    after = scrape()
    labels = {"user": "alice", "model": "smollm2"}
    for name, extra in [
        ("codeyard_llm_requests_total", {"status": "200"}),
        ("codeyard_llm_tokens_total", {"kind": "completion"}),
        ("codeyard_llm_time_to_first_token_seconds_count", {}),
    ]:
        assert metric(after, name, **labels, **extra) > metric(before, name, **labels, **extra)
    assert metric(after, "codeyard_llm_errors_total", user="alice", reason="not_found") > metric(
        before, "codeyard_llm_errors_total", user="alice", reason="not_found"
    )


def test_metrics_need_the_read_metrics_scope(gateway: str, token: str) -> None:
    r = requests.get(f"{gateway}/metrics", headers={"Authorization": f"token {token}"}, timeout=10)
    assert r.status_code == 403
    assert requests.get(f"{gateway}/metrics", timeout=10).status_code == 401


def test_a_key_file_made_after_start_up_is_picked_up(llm: Any, hub: Any, vllm: Any) -> None:
    late = hub.gateways["codeyard-llm-latekey"].url
    r = llm("GET", "models", base=late)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "gateway_misconfigured"
    (Path(hub.workdir) / "late.key").write_text(vllm.key)
    assert llm("GET", "models", base=late).status_code == 200


def test_a_call_without_a_model_goes_to_the_served_model(llm: Any) -> None:
    r = llm("POST", "completions", json={"prompt": "def add(a, b):", "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "smollm2"


def test_metrics_label_unknown_paths_and_models_other(llm: Any, gateway: str, hub: Any) -> None:
    llm("POST", "no-such-route-4711", json={})
    llm("POST", "chat/completions", json={**CHAT, "model": "no-such-model-4711"})
    r = requests.get(
        f"{gateway}/metrics", headers={"Authorization": f"token {hub.admin_token}"}, timeout=10
    )
    assert "4711" not in r.text
    assert metric(r.text, "codeyard_llm_requests_total", user="alice", path="other") >= 1
    assert metric(r.text, "codeyard_llm_requests_total", user="alice", model="other") >= 1
