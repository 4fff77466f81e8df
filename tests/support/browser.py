"""A user of the Hub's web pages (cookies, _xsrf, redirects, like a browser), and spawning a
workspace as that user."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import requests

from support.hub import HubProcess


class Browser:
    """A user of the Hub's web pages: cookies, _xsrf, redirects, like a browser."""

    def __init__(self, hub_url: str) -> None:
        self.hub_url = hub_url
        self.s = requests.Session()

    def xsrf(self, path: str) -> str:
        r = self.s.get(f"{self.hub_url}{path}", timeout=30)
        r.raise_for_status()
        m = re.search(r'name="_xsrf" value="([^"]+)"', r.text)
        if m:
            return m.group(1)
        return self.hub_xsrf()

    def hub_xsrf(self) -> str:
        # Single-user servers set their own _xsrf under /user/...; the Hub's is under /hub/.
        for c in self.s.cookies:
            if c.name == "_xsrf" and c.path == "/hub/":
                return str(c.value)
        return ""

    def signup(
        self, username: str, password: str, bootstrap: str | None = None
    ) -> requests.Response:
        """Sign up through the form; `bootstrap` is the one-time admin secret of the link
        `make up` prints (the only way to register an admin name)."""
        page = f"/hub/signup?bootstrap={bootstrap}" if bootstrap is not None else "/hub/signup"
        data = {
            "_xsrf": self.xsrf(page),
            "username": username,
            "signup_password": password,
            "signup_password_confirmation": password,
        }
        return self.s.post(f"{self.hub_url}{page}", data=data, timeout=30)

    def login(self, username: str, password: str) -> requests.Response:
        data = {"_xsrf": self.xsrf("/hub/login"), "username": username, "password": password}
        return self.s.post(f"{self.hub_url}/hub/login", data=data, timeout=30)

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Hub REST API with the login cookie (as the Hub's own pages call it)."""
        headers = kw.pop("headers", {})
        headers["X-XSRFToken"] = self.hub_xsrf()
        return self.s.request(
            method, f"{self.hub_url}/hub/api{path}", headers=headers, timeout=30, **kw
        )

    def spawn_form(self, user: str, server: str, fields: dict[str, str]) -> requests.Response:
        data = {"_xsrf": self.xsrf(f"/hub/spawn/{user}/{server}"), **fields}
        return self.s.post(
            f"{self.hub_url}/hub/spawn/{user}/{server}",
            data=data,
            timeout=60,
            allow_redirects=False,
        )

    def start(self, user: str, server: str, options: dict[str, str]) -> list[dict[str, Any]]:
        """Ask the Hub to start `user`'s named `server` with `options` (the spawn form's
        fields as JSON) and follow its event stream to the end; every event, so the caller
        can check whether it ended ready or failed and what it said on the way."""
        r = self.api("POST", f"/users/{user}/servers/{server}", json=options)
        assert r.status_code in (201, 202), r.text
        return self.progress(user, server)

    def progress(self, user: str, server: str, timeout: float = 300) -> list[dict[str, Any]]:
        """Follow the spawn's event stream to its end; return every event."""
        events: list[dict[str, Any]] = []
        with self.api("GET", f"/users/{user}/servers/{server}/progress", stream=True) as r:
            r.raise_for_status()
            deadline = time.monotonic() + timeout
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1].get("ready") or events[-1].get("failed"):
                        break
                if time.monotonic() > deadline:
                    break
        return events


def signed_in(hub_url: str, user: str, password: str) -> Browser:
    """A new user of the Hub's pages: signed up through the form, then logged in, each
    checked, as every test that acts as a fresh user begins."""
    b = Browser(hub_url)
    assert "signup was successful" in b.signup(user, password).text
    assert b.login(user, password).url.endswith("/hub/home")
    return b


def start_workspace(
    hub: HubProcess, browser: Browser, user: str, workspace: str, timeout: float = 300
) -> dict[str, str]:
    """Spawn `user`'s named workspace (small profile) through the Hub API as that user and
    wait until the Hub reports it ready; return an auth header with a fresh token of theirs."""
    r = browser.api("POST", f"/users/{user}/tokens", json={"note": f"e2e {workspace}"})
    assert r.status_code == 201, r.text
    auth = {"Authorization": f"token {r.json()['token']}"}
    r = browser.api("POST", f"/users/{user}/servers/{workspace}", json={"profile": "small"})
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + timeout
    while not (hub.api("GET", f"/users/{user}").json()["servers"].get(workspace) or {}).get(
        "ready"
    ):
        assert time.monotonic() < deadline, f"workspace not ready\n{hub.log_tail()}"
        time.sleep(0.5)
    return auth
