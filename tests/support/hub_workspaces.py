"""A project Hub's workspaces as the multi-machine tests drive them: its placement registry,
a server's model, a timed spawn and a stop, all through the Hub's own API."""

from __future__ import annotations

import time
from typing import Any

from codeyard.placement.crypto import CredentialCipher
from codeyard.placement.database import open_db
from codeyard.placement.registry import Registry
from support.browser import Browser
from support.hub import HubProcess


def registry_of(hub: HubProcess) -> Registry:
    """The Hub's placement registry (its database and credential key in the state folder)."""
    key = (hub.state_dir / "placement_crypt_key").read_text().strip()
    return Registry(
        open_db(f"sqlite:///{hub.state_dir / 'placement.sqlite'}"), CredentialCipher(key)
    )


def server_model(hub: HubProcess, user: str, ws: str) -> dict[str, Any] | None:
    """The Hub's model of `user`'s server `ws`, or None when it has none (stopped)."""
    model: dict[str, Any] | None = hub.api("GET", f"/users/{user}").json()["servers"].get(ws)
    return model


def spawn_and_time(hub: HubProcess, b: Browser, user: str, ws: str) -> float:
    """Start `ws` (small profile) as the user and wait until the Hub calls it ready; the
    seconds that took."""
    started = time.monotonic()
    r = b.api("POST", f"/users/{user}/servers/{ws}", json={"profile": "small"})
    assert r.status_code in (201, 202), r.text
    deadline = started + 300
    while not (server_model(hub, user, ws) or {}).get("ready"):
        assert time.monotonic() < deadline, f"{user}/{ws} not ready\n{hub.log_tail()}"
        time.sleep(0.3)
    return time.monotonic() - started


def stop(hub: HubProcess, b: Browser, user: str, ws: str) -> None:
    """Stop `ws` as the user and wait until the Hub no longer lists it."""
    r = b.api("DELETE", f"/users/{user}/servers/{ws}")
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 60
    while server_model(hub, user, ws):
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.3)
