"""Failed logins lock a name for a while (through the real login form), and logins run their
bcrypt beside the Hub's event loop, so many at once all get through while the Hub answers.

The lock here is 3 failures and 5 seconds, set in the site config as an admin would
(`c.CodeyardHub.failed_logins_before_lock`, `c.CodeyardHub.login_lock_seconds`)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import HubLauncher
from support.browser import Browser
from support.hub import HubProcess

PASSWORD = "correct-horse-battery-7"
FAILURES = 3
LOCK_SECONDS = 5
LOCKED = "Too many failed logins"


@pytest.fixture(scope="module")
def lock_hub(hubs: HubLauncher) -> Iterator[HubProcess]:
    with hubs.running(
        "throttle",
        site_config=(
            f"c.CodeyardHub.failed_logins_before_lock = {FAILURES}\n"
            f"c.CodeyardHub.login_lock_seconds = {LOCK_SECONDS}\n"
        ),
    ) as hub:
        yield hub


def new_user(hub: HubProcess, prefix: str) -> str:
    name = f"{prefix}{secrets.token_hex(3)}"
    assert "The signup was successful" in Browser(hub.url).signup(name, PASSWORD).text
    return name


def test_failed_logins_lock_the_name_until_the_period_ends(lock_hub: HubProcess) -> None:
    hub = lock_hub
    name = new_user(hub, "erin")
    browser = Browser(hub.url)
    for attempt in range(1, FAILURES + 1):
        r = browser.login(name, "wrong-password")
        assert r.status_code == 403 and not r.url.endswith("/hub/home")
        assert (LOCKED in r.text) == (attempt == FAILURES), r.text
    locked_at = time.monotonic()
    # even the right password is refused now, with a message saying how long to wait
    r = browser.login(name, PASSWORD)
    assert r.status_code == 403 and not r.url.endswith("/hub/home")
    assert LOCKED in r.text and "Try again in" in r.text
    # after the period the right password works again
    time.sleep(max(0.0, LOCK_SECONDS + 1 - (time.monotonic() - locked_at)))
    assert browser.login(name, PASSWORD).url.endswith("/hub/home")


def test_a_successful_login_resets_the_count(lock_hub: HubProcess) -> None:
    hub = lock_hub
    name = new_user(hub, "fred")
    browser = Browser(hub.url)
    for _ in range(FAILURES - 1):
        assert LOCKED not in browser.login(name, "wrong-password").text
    assert browser.login(name, PASSWORD).url.endswith("/hub/home")
    other = Browser(hub.url)
    for _ in range(FAILURES - 1):
        assert LOCKED not in other.login(name, "wrong-password").text
    assert other.login(name, PASSWORD).url.endswith("/hub/home")


def test_unknown_names_lock_the_same_way(lock_hub: HubProcess) -> None:
    """The lock message does not tell which names exist."""
    browser = Browser(lock_hub.url)
    ghost = f"ghost{secrets.token_hex(3)}"
    texts = [browser.login(ghost, "wrong-password").text for _ in range(FAILURES + 1)]
    assert LOCKED not in texts[0] and LOCKED in texts[-1]


def test_concurrent_logins_all_succeed_while_the_hub_answers(lock_hub: HubProcess) -> None:
    hub = lock_hub
    names = [new_user(hub, f"u{i}x") for i in range(10)]

    def login(name: str) -> bool:
        return Browser(hub.url).login(name, PASSWORD).url.endswith("/hub/home")

    def health_during() -> list[int]:
        codes = []
        while not all(f.done() for f in logins):
            codes.append(requests.get(f"{hub.url}/hub/health", timeout=30).status_code)
        return codes

    with ThreadPoolExecutor(len(names) + 1) as pool:
        logins = [pool.submit(login, name) for name in names]
        health = pool.submit(health_during)
        assert all(f.result() for f in logins)
        codes = health.result()
    assert codes and set(codes) == {200}
