"""A project Hub's workspaces as the multi-machine and model tests drive them: its placement
registry, a server's model, a timed spawn and a stop, all through the Hub's own API, a spawn
that returns the spawner's progress messages, and an explain through a workspace and the
Hub's gateway."""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from codeyard.placement.crypto import CredentialCipher
from codeyard.placement.database import open_db
from codeyard.placement.registry import Registry
from support.browser import Browser, wait_gone, wait_ready
from support.contents_api import write_text
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
    wait_ready(hub, user, ws, timeout=300, poll=0.3)
    return time.monotonic() - started


def spawn_with_progress(hub: HubProcess, user: str, ws: str) -> list[str]:
    """Start `user`'s `ws` (small profile) as the admin and follow it to ready; the
    spawner's progress messages. They are read from the Hub's log, where the spawner writes
    each one: a start that finishes within the Hub's `slow_spawn_timeout` answers 201, and
    the progress API of a started server only says "ready"."""
    logged = hub.log_path.stat().st_size
    r = hub.api("POST", f"/users/{user}/servers/{ws}", json={"profile": "small"})
    assert r.status_code in (201, 202), r.text
    if r.status_code == 202:
        with requests.get(
            f"{hub.url}/hub/api/users/{user}/servers/{ws}/progress",
            headers={"Authorization": f"token {hub.admin_token}"},
            stream=True,
            timeout=400,
        ) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                assert not event.get("failed"), f"{event}\n{hub.log_tail()}"
                if event.get("ready"):
                    break
    with hub.log_path.open("rb") as log:
        log.seek(logged)
        lines = log.read().decode("utf-8", "replace").splitlines()
    prefix = f"{user}:{ws}: "
    return [line.split(prefix, 1)[1] for line in lines if prefix in line]


def stop(hub: HubProcess, b: Browser, user: str, ws: str) -> None:
    """Stop `ws` as the user and wait until the Hub no longer lists it."""
    r = b.api("DELETE", f"/users/{user}/servers/{ws}")
    assert r.status_code in (202, 204), r.text
    wait_gone(hub, user, ws, poll=0.3)


#: What `explain_from_workspace` writes as calc.py and has the model explain (lines 1-3).
CALC_PY = '''def add(a, b):
    """Return the sum of a and b."""
    return a + b
'''


def explain_from_workspace(
    hub: HubProcess, base: str, token: dict[str, str]
) -> tuple[dict[str, Any], float]:
    """Write calc.py into the workspace at `base` (`<hub>/user/<name>/<ws>`) with the
    Contents API and ask its `codeyard/api/explain` about lines 1-3, so the request goes
    container -> gateway -> model. Both must answer; returns the explain's body and the
    seconds it took, for the caller's checks of the answer."""
    write_text(base, "calc.py", CALC_PY, token)
    started = time.monotonic()
    r = requests.post(
        f"{base}/codeyard/api/explain",
        json={"path": "calc.py", "start_line": 1, "end_line": 3},
        headers=token,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{hub.log_tail()}"
    body: dict[str, Any] = r.json()
    return body, elapsed
