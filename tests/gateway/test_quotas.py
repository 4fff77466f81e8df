"""Quotas that hold: calls are charged even when the caller hangs up, nothing fans one call out
into many answers, only allowed models reach vLLM, and no caller can grow the metrics' label
sets. Real Hub, real vLLM.

The module runs its own minimal Hub (conftest's `module_hub`) with one gateway,
`codeyard-llm-quota`, whose budget is small enough to run out in a few calls (1,500 tokens a
minute per user; answers capped at 300 tokens), so that every count read here comes from this
module's calls alone.
"""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from support.hub import JsonApiHub
from support.llm_stack import MODEL
from test_gateway import metric
from traitlets.config import Config

from codeyard.gateway.accounting import LimitExceeded, TokenLedger, Usage
from codeyard.gateway.app import GatewayApp
from codeyard.gateway.hubconfig import configure_llm_service

SCOPE = "custom:codeyard-llm"
NAME = "codeyard-llm-quota"
BUDGET = 1500
CAP = 300

LONG = {
    "model": MODEL,
    "messages": [
        {"role": "user", "content": "Write the numbers from 1 to 1000, separated by commas."}
    ],
    "max_tokens": CAP,
    "stream": True,
    # Greedy, so the stream runs to the cap every time (the sampled small model may stop
    # after a few numbers).
    "temperature": 0,
}


# The gateways of this module's own Hub (conftest's `module_hub`).
MODULE_GATEWAYS = {
    NAME: [
        f"--GatewayApp.tokens_per_minute_per_user={BUDGET}",
        f"--GatewayApp.max_tokens_cap={CAP}",
    ]
}


@pytest.fixture(scope="module")
def quota_hub(module_hub: JsonApiHub) -> JsonApiHub:
    return module_hub


@pytest.fixture(scope="module")
def base(quota_hub: JsonApiHub) -> str:
    return quota_hub.gateways[NAME].url


def call(base: str, token: str | None, method: str, path: str, **kw: Any) -> requests.Response:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    kw.setdefault("timeout", 120)
    return requests.request(method, f"{base}/v1/{path}", headers=headers, **kw)


def scrape(base: str, hub: JsonApiHub) -> str:
    r = requests.get(
        f"{base}/metrics", headers={"Authorization": f"token {hub.admin_token}"}, timeout=30
    )
    assert r.status_code == 200
    return r.text


def upstream_calls(base: str, hub: JsonApiHub) -> float:
    return metric(scrape(base, hub), "codeyard_llm_upstream_requests_total")


def series(text: str) -> set[str]:
    """Every series in a Prometheus text page: metric name plus its label set."""
    return {
        line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")
    }


@pytest.fixture
def rows_of(quota_hub: JsonApiHub) -> Callable[[str], list[dict[str, Any]]]:
    def rows(user: str) -> list[dict[str, Any]]:
        path = quota_hub.workdir / f"{NAME}-audit.jsonl"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        return [row for row in map(json.loads, filter(None, lines)) if row["user"] == user]

    return rows


def wait_for_rows(rows_of: Callable[[str], list[dict[str, Any]]], user: str, n: int) -> list[Any]:
    """The user's audit rows once there are `n` (a row is written when its call has ended)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = rows_of(user)
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{user} has {len(rows_of(user))} audit rows, expected {n}")


def test_streams_closed_early_are_charged_until_the_budget_gives_429(
    base: str, quota_hub: JsonApiHub, rows_of: Any
) -> None:
    token = quota_hub.user_token("mallory", [SCOPE])
    before = scrape(base, quota_hub)
    statuses: list[int] = []
    refused: requests.Response | None = None
    for attempt in range(12):
        r = call(base, token, "POST", "chat/completions", json=LONG, stream=True)
        statuses.append(r.status_code)
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200, r.text
        next(r.iter_content(chunk_size=None))
        r.close()  # hang up after the first chunk, as a client that saw enough
        row = wait_for_rows(rows_of, "mallory", attempt + 1)[attempt]
        # Cut short: no usage block reached the gateway, so the whole reservation is charged.
        assert row["status"] == 499 and row["error"] == "client_gone", row
        assert row["charged_tokens"] > CAP, row
    assert refused is not None, f"never refused: {statuses}"
    assert statuses.count(200) >= 2, statuses
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert "token budget" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    charged = sum(row["charged_tokens"] for row in rows_of("mallory"))
    assert charged > BUDGET - CAP - 100, charged
    after = scrape(base, quota_hub)
    name = "codeyard_llm_charged_tokens_total"
    assert metric(after, name, user="mallory") - metric(before, name, user="mallory") == charged


def test_an_answer_read_to_the_end_is_charged_what_vllm_reported(
    base: str, quota_hub: JsonApiHub, rows_of: Any
) -> None:
    token = quota_hub.user_token("trent", [SCOPE])
    short = {**LONG, "max_tokens": 16}
    r = call(base, token, "POST", "chat/completions", json=short, stream=True)
    assert r.status_code == 200 and r.content
    row = wait_for_rows(rows_of, "trent", 1)[0]
    assert row["status"] == 200
    assert row["completion_tokens"] > 0
    assert row["charged_tokens"] == row["prompt_tokens"] + row["completion_tokens"]


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("completions", {"prompt": ["def a():", "def b():"]}, "prompt"),
        ("completions", {"prompt": [[1, 2, 3], [4, 5, 6]]}, "prompt"),
        ("completions", {"prompt": "def a():", "n": 2}, "n"),
        ("completions", {"prompt": "def a():", "best_of": 2}, "best_of"),
        ("completions", {"prompt": "def a():", "ignore_eos": True}, "ignore_eos"),
        ("completions", {"prompt": "def a():", "min_tokens": 4}, "min_tokens"),
        ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        (
            "chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "ignore_eos": True},
            "ignore_eos",
        ),
        (
            "chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "min_tokens": 4},
            "min_tokens",
        ),
    ],
)
def test_calls_that_fan_out_are_refused_with_400_before_vllm(
    base: str, quota_hub: JsonApiHub, path: str, extra: dict[str, Any], param: str
) -> None:
    token = quota_hub.user_token("walter", [SCOPE])
    before = upstream_calls(base, quota_hub)
    r = call(base, token, "POST", path, json={"model": MODEL, "max_tokens": 4, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_parameter"
    assert error["message"].startswith(f"{param}:")
    assert upstream_calls(base, quota_hub) == before


@pytest.mark.parametrize("prompt", ["def add(a, b):", [755, 1123, 28], ["def add(a, b):"]])
def test_one_prompt_still_works(base: str, quota_hub: JsonApiHub, prompt: Any) -> None:
    token = quota_hub.user_token("peggy", [SCOPE])
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "n": 1, "ignore_eos": False}
    r = call(base, token, "POST", "completions", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 1


def test_an_unknown_model_gets_404_without_reaching_vllm(base: str, quota_hub: JsonApiHub) -> None:
    token = quota_hub.user_token("oscar", [SCOPE])
    # A known model first: the gateway learns vLLM's model list once, then answers from it.
    known = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    ok = call(base, token, "POST", "completions", json=known)
    assert ok.status_code == 200, ok.text
    before = upstream_calls(base, quota_hub)
    for path, body in [
        ("chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        ("completions", {"model": "smollm2-but-bigger", "prompt": "x"}),
        ("completions", {"model": ["smollm2"], "prompt": "x"}),
    ]:
        r = call(base, token, "POST", path, json=body)
        assert r.status_code == 404, r.text
        error = r.json()["error"]
        assert error["code"] == "model_not_found"
        assert MODEL in error["message"]  # says what is offered
    text = scrape(base, quota_hub)
    assert metric(text, "codeyard_llm_upstream_requests_total") == before
    assert "gpt-4o" not in text and "bigger" not in text
    assert metric(text, "codeyard_llm_errors_total", model="other", reason="model_not_found") >= 3


def _random_word(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(3, 24)))


# Kinds of request a caller can make up: (method, path template, whether it has a body).
SHAPES = [
    ("POST", "/v1/chat/completions", True),
    ("POST", "/v1/completions", True),
    ("GET", "/v1/{w}", False),
    ("POST", "/v1/{w}/{w}", True),
    ("GET", "/{w}", False),
    ("POST", f"/services/{NAME}/v1/{{w}}", True),
    ("GET", f"/services/{NAME}/{{w}}", False),
]


def _send(
    session: requests.Session, base: str, rng: random.Random, shape: int, token: str | None
) -> int:
    method, template, has_body = SHAPES[shape]
    path = template.replace("{w}", _random_word(rng))
    kw: dict[str, Any] = {"timeout": 30}
    if token is not None:
        kw["headers"] = {"Authorization": f"Bearer {token}"}
    if has_body:
        kw["json"] = {"model": _random_word(rng), "prompt": "x", "max_tokens": 1}
    return session.request(method, base + path, **kw).status_code


def test_made_up_paths_and_models_add_no_metric_series(base: str, quota_hub: JsonApiHub) -> None:
    token = quota_hub.user_token("eve", [SCOPE])
    rng = random.Random(4711)
    with requests.Session() as session:
        # Every kind of request once, with and without a token: what series they make exist
        # from here on, and the next 10,000 must not add any.
        for shape in range(len(SHAPES)):
            for who in (None, token):
                assert _send(session, base, rng, shape, who) in (401, 404)
        assert _send(session, base, rng, 0, "not-a-token") == 401
    before = series(scrape(base, quota_hub))

    def batch(seed: int) -> list[int]:
        local = random.Random(seed)
        with requests.Session() as session:
            statuses = [_send(session, base, local, i % len(SHAPES), None) for i in range(1250)]
            # Some with the user's own token (made-up models and paths) and a few with a
            # token the Hub does not know.
            statuses += [_send(session, base, local, i % len(SHAPES), token) for i in range(40)]
            statuses += [_send(session, base, local, 0, f"bogus-{seed}-{i}") for i in range(5)]
        return statuses

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = [s for part in pool.map(batch, range(8)) for s in part]
    elapsed = time.monotonic() - started
    assert len(statuses) >= 10_000
    assert set(statuses) <= {401, 404}, sorted(set(statuses))
    after = series(scrape(base, quota_hub))
    assert after == before, {"new": sorted(after - before)[:20], "elapsed": elapsed}


def test_the_ledger_counts_reservations_of_calls_in_flight() -> None:
    now = [0.0]
    ledger = TokenLedger(max_concurrent=0, tokens_per_minute=1000, clock=lambda: now[0])
    first = ledger.reserve("u", 400)
    second = ledger.reserve("u", 400)
    # Two calls in flight hold 800: a third that may cost 400 does not fit beside them.
    with pytest.raises(LimitExceeded) as refused:
        ledger.reserve("u", 400)
    assert refused.value.reason == "tokens_per_minute"
    assert ledger.usage("u").reserved == 800
    ledger.settle(first, 120)  # vLLM reported 120: the rest of the reservation is freed
    ledger.refund(second)  # vLLM generated nothing
    assert ledger.usage("u") == Usage(spent=120, reserved=0, in_flight=0)
    ledger.reserve("u", 400)
    now[0] = 61.0  # the charge has left the window
    assert ledger.usage("u").spent == 0
    # One call bigger than the whole budget runs, alone.
    lone = TokenLedger(max_concurrent=0, tokens_per_minute=100)
    lone.reserve("v", 500)
    with pytest.raises(LimitExceeded):
        lone.reserve("v", 1)


def test_the_window_is_kept_in_whole_seconds_and_never_short() -> None:
    now = [100.9]
    ledger = TokenLedger(max_concurrent=0, tokens_per_minute=1000, clock=lambda: now[0])
    ledger.settle(ledger.reserve("u", 900), 900)
    with pytest.raises(LimitExceeded) as refused:
        ledger.reserve("u", 200)
    # Charged in second 100: it counts until second 161 begins, and the refusal says so.
    assert refused.value.retry_after == 61  # ceil(161 - 100.9)
    now[0] = 160.99  # 60.09 s later: an exact 60 s window would have let it go
    assert ledger.usage("u").spent == 900
    now[0] = 161.0
    assert ledger.usage("u") == Usage(spent=0, reserved=0, in_flight=0)
    ledger.reserve("u", 200)
    # A clock stepped back does not bring the old charge back or lose the new reservation.
    now[0] = 150.0
    assert ledger.usage("u") == Usage(spent=0, reserved=200, in_flight=1)


def test_a_full_ledger_refuses_with_a_reason_and_forgets_only_idle_users() -> None:
    now = [0.0]
    ledger = TokenLedger(max_concurrent=0, tokens_per_minute=0, clock=lambda: now[0])
    most = TokenLedger.USERS * 3 // 4
    for i in range(most):  # users with tokens charged in the window are kept
        ledger.settle(ledger.reserve(f"busy{i}", 5), 5)
    with pytest.raises(LimitExceeded) as refused:
        ledger.reserve("late", 5)
    assert refused.value.reason == "capacity"
    assert f"{most} users" in refused.value.message
    assert ledger.usage("busy7").spent == 5  # nothing counted was dropped to make room
    now[0] = 61.0  # every charge has left the window: those users may be forgotten
    held = ledger.reserve("late", 5)
    assert ledger.usage("late") == Usage(spent=0, reserved=5, in_flight=1)
    ledger.settle(held, 3)
    assert ledger.usage("late").spent == 3
    # Calls in flight: a bounded table too, refused the same way when full.
    calls = TokenLedger(max_concurrent=0, tokens_per_minute=0)
    for i in range(TokenLedger.CALLS):
        calls.reserve(f"c{i % 100}", 1)
    with pytest.raises(LimitExceeded) as refused:
        calls.reserve("c1", 1)
    assert refused.value.reason == "capacity"


def test_a_ledger_file_of_another_layout_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    path.write_bytes(b"SQLite format 3\x00" + bytes(4096))  # the ledger's earlier format
    ledger = TokenLedger(max_concurrent=1, tokens_per_minute=0, path=path)
    ledger.reserve("u", 10)
    again = TokenLedger(max_concurrent=1, tokens_per_minute=0, path=path)
    with pytest.raises(LimitExceeded):  # a second open keeps what the first holds
        again.reserve("u", 10)
    assert again.usage("u") == Usage(spent=0, reserved=10, in_flight=1)
    assert (path.stat().st_mode & 0o777) == 0o600


def test_the_hub_config_can_name_the_one_allowed_model() -> None:
    service = configure_llm_service(
        Config(),
        port=8002,
        upstream_url="http://127.0.0.1:8003",
        key_file="/srv/vllm.key",
        audit_log="/srv/audit.jsonl",
        model="smollm2",
    )
    app = GatewayApp()
    app.parse_command_line(service["command"][3:])
    assert app.allowed_models == ["smollm2"]
    assert GatewayApp().allowed_models == []  # learned from vLLM
