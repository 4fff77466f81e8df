"""Several gateway worker processes on one port: per-user limits, charges, metrics and the
audit chain hold across them. Real Hub, real vLLM, real forked workers.

The module runs its own minimal Hub (conftest's `module_hub`) with two gateways of 2 workers
each (the kernel spreads connections over the workers by SO_REUSEPORT): `codeyard-llm-forked`
(2 calls in flight per user, no token budget) and `codeyard-llm-forked-quota` (10,000 tokens
a minute per user, no concurrency limit). Answers are capped at 2,000 tokens and the long
calls here ask for that many, so a call is still streaming while the test probes the other
worker (SmolLM2 counting to 1,000 takes tens of seconds on two cores); each test checks
afterwards, from the audit, that its long calls were cut short by the test (499), i.e. were
in flight throughout.
Each answer carries the pid of the worker that served it (`X-Codeyard-Gateway-Pid`), so
every test shows that its calls landed on both workers, not only that the limits held.
"""

from __future__ import annotations

import json
import os
import random
import signal
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
from traitlets import TraitError

from codeyard.gateway.accounting import LimitExceeded, TokenLedger
from codeyard.gateway.app import GatewayApp
from codeyard.gateway.body_checks import reservation_tokens
from codeyard.server_extension.audit import AuditLog

SCOPE = "custom:codeyard-llm"
PID = "X-Codeyard-Gateway-Pid"
CONC = "codeyard-llm-forked"
QUOTA = "codeyard-llm-forked-quota"
WARM = "codeyard-llm-forked-warm"
LIMIT = 2
BUDGET = 10_000
CAP = 2000

LONG = {
    "model": MODEL,
    "messages": [
        {"role": "user", "content": "Write the numbers from 1 to 1000, separated by commas."}
    ],
    "max_tokens": CAP,
    "stream": True,
    # Greedy, so the stream is long every time: sampled, the small test model sometimes ends
    # a count after a few numbers, and a held stream that ends frees its slot too early.
    "temperature": 0,
}


# The gateways of this module's own Hub (conftest's `module_hub`).
MODULE_GATEWAYS = {
    CONC: [
        "--GatewayApp.processes=2",
        f"--GatewayApp.max_concurrent_per_user={LIMIT}",
        "--GatewayApp.tokens_per_minute_per_user=0",
        f"--GatewayApp.max_tokens_cap={CAP}",
    ],
    QUOTA: [
        "--GatewayApp.processes=2",
        "--GatewayApp.max_concurrent_per_user=0",
        f"--GatewayApp.tokens_per_minute_per_user={BUDGET}",
        f"--GatewayApp.max_tokens_cap={CAP}",
    ],
    # Token answers kept 3 s (swept every 0.5 s, renewed from 1.5 s): a token can come
    # back after its answers' age within a test.
    WARM: ["--GatewayApp.processes=2", "--GatewayApp.token_cache_seconds=3"],
}


@pytest.fixture(scope="module")
def forked_hub(module_hub: JsonApiHub) -> JsonApiHub:
    return module_hub


def base(hub: JsonApiHub, name: str) -> str:
    return hub.gateways[name].url


def post(url: str, token: str, body: dict[str, Any], **kw: Any) -> requests.Response:
    """One call on a connection of its own (the kernel picks the worker per connection)."""
    kw.setdefault("timeout", 120)
    return requests.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}", "Connection": "close"},
        data=json.dumps(body),
        **kw,
    )


def pid_of(r: requests.Response) -> int:
    return int(r.headers[PID])


# Iterators of the streams a test holds open: dropping a body iterator mid-answer makes
# urllib3 close the connection, which the gateway rightly treats as a hang-up.
READING: list[Any] = []


def read_first_chunk(r: requests.Response) -> None:
    """Read the first chunk of a stream and keep it open, unread, until `r.close()`."""
    body = r.iter_content(chunk_size=None)
    next(body)
    READING.append(body)


def scrape(url: str, hub: JsonApiHub) -> requests.Response:
    r = requests.get(
        f"{url}/metrics",
        headers={"Authorization": f"token {hub.admin_token}", "Connection": "close"},
        timeout=30,
    )
    assert r.status_code == 200
    return r


def series(text: str) -> set[str]:
    return {
        line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def audit_rows(hub: JsonApiHub, name: str) -> list[dict[str, Any]]:
    path = hub.workdir / f"{name}-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_rows(hub: JsonApiHub, name: str, user: str, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = [r for r in audit_rows(hub, name) if r["user"] == user]
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{user}: fewer than {n} audit rows")


def models(url: str, token: str) -> requests.Response:
    """`GET /v1/models` on a connection of its own; must succeed."""
    r = requests.get(
        f"{url}/v1/models",
        headers={"Authorization": f"Bearer {token}", "Connection": "close"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def probe_both_workers(
    send: Callable[[], requests.Response], tries: int = 40
) -> dict[int, requests.Response]:
    """Send fresh connections until two workers have answered; one answer per worker."""
    seen: dict[int, requests.Response] = {}
    for _ in range(tries):
        r = send()
        seen.setdefault(pid_of(r), r)
        if len(seen) == 2:
            return seen
    raise AssertionError(f"{tries} connections all reached worker(s) {sorted(seen)}")


def hold_streams_on_both_workers(url: str, token: str) -> tuple[list[requests.Response], int]:
    """Two streams of one user, in flight on two different workers, and how many streams
    were started in all (one that reached the first one's worker is closed at once)."""
    held: list[requests.Response] = []
    started = 0
    for _ in range(60):
        r = post(url, token, LONG, stream=True)
        if r.status_code == 429:
            # A stream just closed holds its slot until its worker sees the hang-up.
            time.sleep(0.2)
            continue
        assert r.status_code == 200, r.text
        started += 1
        if held and pid_of(r) == pid_of(held[0]):
            r.close()  # same worker as the first: try another connection
            continue
        read_first_chunk(r)
        held.append(r)
        if len(held) == 2:
            return held, started
    raise AssertionError("no two connections reached different workers")


def test_the_process_count_follows_the_cores_and_is_at_least_one() -> None:
    assert GatewayApp().processes == max(1, min(4, len(os.sched_getaffinity(0))))
    assert GatewayApp(processes=3).processes == 3
    with pytest.raises(TraitError, match="processes must be >= 1"):
        GatewayApp(processes=0)


def test_the_ledger_is_shared_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    one = TokenLedger(max_concurrent=1, tokens_per_minute=1000, path=path)
    other = TokenLedger(max_concurrent=1, tokens_per_minute=1000, path=path)
    held = one.reserve("u", 600)
    with pytest.raises(LimitExceeded) as refused:
        other.reserve("u", 1)
    assert refused.value.reason == "concurrency"
    one.settle(held, 700)
    with pytest.raises(LimitExceeded) as refused:
        TokenLedger(max_concurrent=0, tokens_per_minute=1000, path=path).reserve("u", 400)
    assert refused.value.reason == "tokens_per_minute"
    assert other.usage("u").spent == 700
    # A process that died holding a reservation: charged in full when it is reaped.
    orphan = other.reserve("v", 250)
    assert one.close_process(os.getpid()) == 1
    other.settle(orphan, 10)  # too late: the reservation was already charged
    assert one.usage("v").spent == 250 and one.usage("v").in_flight == 0
    assert (path.stat().st_mode & 0o777) == 0o600


def test_the_concurrency_limit_holds_across_workers(forked_hub: JsonApiHub) -> None:
    url = base(forked_hub, CONC)
    token = forked_hub.user_token("carol", [SCOPE])
    held, started = hold_streams_on_both_workers(url, token)
    try:
        small = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        answers = probe_both_workers(lambda: post(url, token, small))
        # Each worker has one of carol's streams itself and refuses a third for the other's.
        for r in answers.values():
            assert r.status_code == 429, r.text
            assert "too many concurrent requests" in r.json()["error"]["message"]
    finally:
        for r in held:
            r.close()
    rows = wait_rows(forked_hub, CONC, "carol", started)
    assert {row["pid"] for row in rows} == {pid_of(r) for r in held}
    assert all(row["status"] == 499 for row in rows), rows  # in flight until closed
    again = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert post(url, token, again).status_code == 200


def test_the_token_budget_holds_across_workers_and_aborted_streams_are_charged(
    forked_hub: JsonApiHub,
) -> None:
    url = base(forked_hub, QUOTA)
    token = forked_hub.user_token("dave", [SCOPE])
    reservation = reservation_tokens(dict(LONG))
    fits = BUDGET // reservation
    assert fits >= 2

    def start(_: int) -> requests.Response:
        return post(url, token, LONG, stream=True)

    # All at once, each on its own connection: a ledger per worker would let `fits` in on
    # each worker; the shared one lets `fits` in all told.
    with ThreadPoolExecutor(3 * fits) as pool:
        answers = list(pool.map(start, range(3 * fits)))
    try:
        admitted = [r for r in answers if r.status_code == 200]
        refused = [r for r in answers if r.status_code == 429]
        assert len(admitted) + len(refused) == len(answers), [r.status_code for r in answers]
        assert len(admitted) == fits, [r.status_code for r in answers]
        assert len({pid_of(r) for r in answers}) == 2, "all calls reached one worker"
        for r in admitted:
            read_first_chunk(r)
    finally:
        for r in answers:
            r.close()  # hang up: the admitted streams are cut short
    rows = wait_rows(forked_hub, QUOTA, "dave", fits)
    for row in rows:
        assert row["status"] == 499 and row["error"] == "client_gone", row
        assert row["charged_tokens"] == reservation, row
    # What the aborted streams were charged leaves no room on any worker.
    assert BUDGET - fits * reservation < reservation
    one_more = {**LONG, "stream": False}
    for r in probe_both_workers(lambda: post(url, token, one_more)).values():
        assert r.status_code == 429, r.text
        assert "token budget" in r.json()["error"]["message"]
    total = metric(scrape(url, forked_hub).text, "codeyard_llm_charged_tokens_total", user="dave")
    assert total == fits * reservation


def _word(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 16)))


def test_metrics_add_up_every_worker_under_a_fixed_series_set(forked_hub: JsonApiHub) -> None:
    url = base(forked_hub, CONC)
    rng = random.Random(99)
    # Every kind of unauthenticated request once, so its series exist before the count.
    for path in (f"/{_word(rng)}", f"/v1/{_word(rng)}"):
        assert requests.get(url + path, timeout=10).status_code in (401, 404)
    pages = probe_both_workers(lambda: scrape(url, forked_hub))
    before = [series(r.text) for r in pages.values()]
    assert before[0] == before[1], "two workers serve different series"
    counts = {
        metric(r.text, "codeyard_llm_requests_total", status="404", user="-")
        for r in pages.values()
    }
    assert len(counts) == 1, counts
    start_count = counts.pop()

    def batch(seed: int) -> set[int]:
        local = random.Random(seed)
        pids = set()
        for _ in range(250):
            r = requests.get(
                f"{url}/{_word(local)}/{_word(local)}", timeout=30, headers={"Connection": "close"}
            )
            assert r.status_code == 404
            pids.add(pid_of(r))
        return pids

    with ThreadPoolExecutor(4) as pool:
        pids = set().union(*pool.map(batch, range(4)))
    assert len(pids) == 2, pids
    after = probe_both_workers(lambda: scrape(url, forked_hub))
    for r in after.values():
        assert series(r.text) == before[0]
        assert metric(r.text, "codeyard_llm_requests_total", status="404", user="-") == (
            start_count + 1000
        )


def test_one_workers_token_answer_serves_the_other(forked_hub: JsonApiHub) -> None:
    """The Hub is asked about a new token once, not once per worker (`SharedAnswers`):
    the workers' lookups, counted in the summed metrics, grow by one while both workers
    serve the token on fresh connections."""
    url = base(forked_hub, CONC)
    lookups = "codeyard_llm_hub_token_lookups_total"
    token = forked_hub.user_token("grace", [SCOPE])
    # The scrapes' own token: its answer is taken (or renewed ahead, counted when the
    # renewal starts, after that page was made) by a first scrape, and fresh for the rest.
    scrape(url, forked_hub)
    time.sleep(0.5)
    before = scrape(url, forked_hub).text

    probe_both_workers(lambda: models(url, token))
    after = scrape(url, forked_hub).text
    # Background renewals (of this or earlier tests' tokens, kept warm) may run meanwhile;
    # a call waits only for this token's first lookup.
    assert metric(after, lookups, when="on_call") == metric(before, lookups, when="on_call") + 1


def test_a_token_back_after_its_answers_age_finds_it_kept_warm(forked_hub: JsonApiHub) -> None:
    """A token used within the last `token_keep_warm_seconds` (60 s) has its answer renewed
    in the background by the worker that served it, and the other worker takes it from the
    shared answers: calls after the answers' age (3 s here), on fresh connections to both
    workers, do not wait for the Hub. Without keeping warm each would (a 401-free call that
    waited is counted under `on_call`)."""
    url = base(forked_hub, WARM)
    lookups = "codeyard_llm_hub_token_lookups_total"
    token = forked_hub.user_token("heidi", [SCOPE])

    models(url, token)
    early = scrape(url, forked_hub).text
    time.sleep(4)  # past the answers' 3 s
    before = scrape(url, forked_hub).text  # the scrapes' own token is kept warm too
    assert metric(before, lookups, when="ahead") > metric(early, lookups, when="ahead")
    probe_both_workers(lambda: models(url, token))
    after = scrape(url, forked_hub).text
    assert metric(after, lookups, when="on_call") == metric(before, lookups, when="on_call")


def test_the_audit_is_one_valid_chain_written_by_both_workers(forked_hub: JsonApiHub) -> None:
    url = base(forked_hub, CONC)
    token = forked_hub.user_token("frank", [SCOPE])
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(url, token, body), range(4 * LIMIT)))
    assert {r.status_code for r in answers} <= {200, 429}
    probe_both_workers(lambda: post(url, token, body))
    log = AuditLog(forked_hub.workdir / f"{CONC}-audit.jsonl")
    records = log.records()
    assert log.verify(), "the chain is broken"
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len({r["pid"] for r in records}) == 2


def test_a_killed_worker_is_replaced_and_its_calls_are_charged(forked_hub: JsonApiHub) -> None:
    url = base(forked_hub, QUOTA)
    token = forked_hub.user_token("grace", [SCOPE])
    r = post(url, token, LONG, stream=True)
    assert r.status_code == 200, r.text
    read_first_chunk(r)
    victim = pid_of(r)
    os.kill(victim, signal.SIGKILL)
    r.close()
    ledger = TokenLedger(0, 0, path=forked_hub.workdir / f"{QUOTA}-audit-ledger")
    deadline = time.monotonic() + 30
    while ledger.usage("grace").in_flight and time.monotonic() < deadline:
        time.sleep(0.1)
    usage = ledger.usage("grace")
    assert usage.in_flight == 0 and usage.spent == reservation_tokens(dict(LONG))
    small = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    workers = probe_both_workers(lambda: post(url, token, small))
    assert victim not in workers
    assert all(answer.status_code == 200 for answer in workers.values())
