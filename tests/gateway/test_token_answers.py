"""The token answers the gateway's workers share (`token_cache.SharedAnswers`): one worker's
Hub answer, renewal or revocation serves the others. Real files and a real forked process;
the Hub and the clock are stand-ins so that ages are exact (the real Hub and real workers
are in test_prefork.py)."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
from pathlib import Path
from typing import Any

from codeyard.gateway.token_cache import SharedAnswers, TokenAnswer, TokenCache

SCOPE = "custom:codeyard-llm"


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def test_workers_share_answers_renewals_and_revocations(tmp_path: Path) -> None:
    now = [0.0]
    valid = {"t": True}
    asked: list[tuple[str, float, str]] = []
    path = tmp_path / "answers"

    def worker(name: str) -> TokenCache:
        async def hub_lookup(token: str) -> dict[str, Any] | None:
            asked.append((name, now[0], token))
            return {"name": "u", "scopes": [SCOPE]} if valid[token] else None

        whens: list[str] = []
        cache = TokenCache(
            hub_lookup,
            lambda user: SCOPE in user["scopes"],
            max_age=30,
            clock=lambda: now[0],
            shared=SharedAnswers(path),  # each worker maps the file itself
            on_lookup=whens.append,
        )
        cache.whens = whens  # type: ignore[attr-defined]
        return cache

    a, b = worker("a"), worker("b")

    async def at(cache: TokenCache, t: float) -> TokenAnswer:
        now[0] = t
        answer = await cache.answer("t")
        for _ in range(3):  # let a renewal started by this call run
            await asyncio.sleep(0)
        return answer

    async def scenario() -> None:
        assert (await at(a, 0)).allowed and asked == [("a", 0, "t")]
        assert (await at(b, 1)).allowed and len(asked) == 1  # a's answer, no lookup
        assert (await at(b, 16)).allowed and asked[-1] == ("b", 16, "t")  # renewed ahead
        assert (await at(a, 20)).at == 16 and len(asked) == 2  # a takes b's renewal
        valid["t"] = False  # revoked at the Hub
        assert (await at(b, 32)).user is not None  # served, and renewed: now known revoked
        assert asked[-1] == ("b", 32, "t")
        assert (await at(a, 33)).user is None and len(asked) == 3  # a learns it from b
        valid["t"] = True
        assert (await at(a, 63)).user is not None  # b's answer expired: a asks on the call
        assert asked[-1] == ("a", 63, "t")
        assert a.whens == ["on_call", "on_call"]  # type: ignore[attr-defined]
        assert b.whens == ["ahead", "ahead"]  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_an_answer_from_another_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "answers"
    SharedAnswers(path).clear()
    user = {"name": "zoë", "groups": ["g"], "scopes": [SCOPE]}
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(
        target=lambda: SharedAnswers(path).put(digest("t"), TokenAnswer(user, True, 5.0))
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    held = SharedAnswers(path).get(digest("t"))
    assert held == TokenAnswer(user, True, 5.0)
    assert SharedAnswers(path).get(digest("other")) is None


def test_a_newer_answer_wins_and_clear_forgets_everything(tmp_path: Path) -> None:
    shared = SharedAnswers(tmp_path / "answers")
    assert (tmp_path / "answers").stat().st_mode & 0o777 == 0o600
    key = digest("t")
    assert shared.put(key, TokenAnswer({"name": "u"}, True, 10.0))
    assert not shared.put(key, TokenAnswer(None, False, 5.0))  # an older renewal lost the race
    assert shared.get(key) == TokenAnswer({"name": "u"}, True, 10.0)
    assert shared.put(key, TokenAnswer(None, False, 11.0))  # a newer one replaces it
    assert shared.get(key) == TokenAnswer(None, False, 11.0)
    shared.clear()
    assert shared.get(key) is None


def test_an_answer_too_large_for_a_slot_stays_with_its_worker(tmp_path: Path) -> None:
    big = {"name": "u", "scopes": [SCOPE], "groups": [f"group-{i:05d}" for i in range(400)]}
    calls: list[str] = []

    async def hub_lookup(token: str) -> dict[str, Any] | None:
        calls.append(token)
        return big

    def cache() -> TokenCache:
        return TokenCache(
            hub_lookup, lambda u: True, max_age=30, clock=lambda: 0.0,
            shared=SharedAnswers(tmp_path / "answers"),
        )  # fmt: skip

    async def scenario() -> None:
        first, second = cache(), cache()
        assert (await first.answer("t")).user == big
        assert (await first.answer("t")).user == big and calls == ["t"]  # kept locally
        assert (await second.answer("t")).user == big and calls == ["t", "t"]  # not shared

    asyncio.run(scenario())


def test_answers_from_the_future_or_a_damaged_slot_are_not_used(tmp_path: Path) -> None:
    path = tmp_path / "answers"
    shared = SharedAnswers(path)
    asked: list[float] = []
    now = [100.0]

    async def hub_lookup(token: str) -> dict[str, Any] | None:
        asked.append(now[0])
        return {"name": "u"}

    # An answer stamped after "now" (a file kept across a reboot, which `clear` at the
    # gateway's start also prevents) is ignored.
    shared.put(digest("t"), TokenAnswer({"name": "ghost"}, True, 500.0))
    cache = TokenCache(hub_lookup, lambda u: True, max_age=30, clock=lambda: now[0], shared=shared)
    assert asyncio.run(cache.answer("t")).user == {"name": "u"} and asked == [100.0]
    # A slot whose JSON is damaged reads as empty.
    key = digest("d")
    shared.put(key, TokenAnswer({"name": "d"}, True, 1.0))
    with path.open("r+b") as f:
        f.seek(shared._slot(key) + SharedAnswers._HEAD.size)
        f.write(b"\xff\xfe")
    assert shared.get(key) is None


def test_without_a_cache_no_answers_are_shared(tmp_path: Path) -> None:
    from codeyard.gateway.app import GatewayApp

    app = GatewayApp(audit_log_path=str(tmp_path / "audit.jsonl"), token_cache_seconds=0)
    assert app.open_shared_answers() is None
    assert not app.shared_answers_path.exists()
    app.token_cache_seconds = 30
    shared = app.open_shared_answers()
    assert shared is not None and shared.path == tmp_path / "audit-token-answers"


def test_recently_used_tokens_are_kept_warm_without_a_call(tmp_path: Path) -> None:
    """`sweep` renews the answers of valid tokens used within `keep_warm`; a user who comes
    back 45 s later finds a fresh answer instead of waiting for the Hub. Another worker's
    sweep takes the renewal from the shared answers instead of asking again."""
    now = [0.0]
    valid = {"t": True, "bad": False, "noscope": True}
    asked: list[tuple[str, float, str]] = []
    path = tmp_path / "answers"

    def worker(name: str) -> TokenCache:
        async def hub_lookup(token: str) -> dict[str, Any] | None:
            asked.append((name, now[0], token))
            scopes = [] if token == "noscope" else [SCOPE]
            return {"name": "u", "scopes": scopes} if valid[token] else None

        return TokenCache(
            hub_lookup, lambda u: SCOPE in u["scopes"], max_age=30, clock=lambda: now[0],
            shared=SharedAnswers(path), keep_warm=60,
        )  # fmt: skip

    a, b = worker("a"), worker("b")

    async def settle() -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    async def call(cache: TokenCache, t: float, token: str = "t") -> TokenAnswer:
        now[0] = t
        answer = await cache.answer(token)
        await settle()
        return answer

    async def sweep(cache: TokenCache, t: float) -> int:
        now[0] = t
        started = cache.sweep()
        await settle()
        return started

    async def scenario() -> None:
        await call(a, 0)
        await call(b, 1)  # from the shared answer
        assert (await call(a, 2, "bad")).user is None  # invalid: never kept warm
        assert not (await call(a, 3, "noscope")).allowed  # nor one without the scope
        assert asked == [("a", 0, "t"), ("a", 2, "bad"), ("a", 3, "noscope")]
        assert await sweep(a, 10) == 0  # 10 s old: nothing to do
        assert await sweep(a, 16) == 1 and asked[-1] == ("a", 16, "t")
        assert await sweep(b, 17) == 0 and len(asked) == 4  # b takes a's renewal
        # Back after 45 s: served at once from the kept answer (29 s old), renewed ahead.
        answer = await call(b, 45)
        assert answer.at == 16 and asked[-1] == ("b", 45, "t")
        # Unused from here: kept warm until 60 s after its last call in a worker (a: 0,
        # b: 45), then forgotten.
        for t in (61, 77, 93, 104):
            await sweep(a, t)
            await sweep(b, t + 0.5)
        assert asked[5:] == [("b", 61.5, "t"), ("b", 77.5, "t"), ("b", 93.5, "t")]
        assert await sweep(a, 110) == 0 and await sweep(b, 110) == 0
        # Revoked while kept warm: the renewal learns it, and the next sweep stops there.
        await call(a, 200)
        valid["t"] = False
        await sweep(a, 216)
        assert (await call(b, 217)).user is None
        assert await sweep(a, 232) == 0

    asyncio.run(scenario())
