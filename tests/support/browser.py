"""A user of the Hub's web pages (cookies, _xsrf, redirects, like a browser), and spawning a
workspace as that user: signed up and logged in (`signed_in`), a token of theirs
(`user_token`), a named server started (`start_server`, `start_workspace`) and waited for until
the Hub reports it ready or no longer lists it (`wait_ready`, `wait_gone`). The Hub test
modules start their workspaces through these, so a change to how the Hub answers is made
here once."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from support.hub import HubProcess


class Browser:
    """A user of the Hub's web pages: cookies, _xsrf, redirects, like a browser."""

    def __init__(self, hub_url: str) -> None:
        self.hub_url = hub_url
        self.s = requests.Session()
        # A kept-alive connection the proxy closes as it is reused (its idle timeout is 5 s,
        # and tests wait about that long, e.g. for a login lock to end) resets the next
        # request. A browser sends a GET again on a new connection then; so does this one,
        # once. Other methods are never sent twice.
        once = Retry(
            total=1,
            connect=1,
            read=1,
            status=0,
            other=0,
            allowed_methods=frozenset({"GET", "HEAD"}),
            backoff_factor=0,
            raise_on_status=False,
        )
        self.s.mount("http://", HTTPAdapter(max_retries=once))

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


def user_token(browser: Browser, user: str, note: str) -> str:
    """A fresh API token of `user`, asked for through the Hub API as that user."""
    r = browser.api("POST", f"/users/{user}/tokens", json={"note": note})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def wait_ready(
    hub: HubProcess, user: str, workspace: str, timeout: float = 300, poll: float = 0.5
) -> dict[str, Any]:
    """Until the Hub reports `user`'s named server `workspace` ready; its model then. Read
    as the admin service, so the wait does not touch the user's session."""
    deadline = time.monotonic() + timeout
    while True:
        model: dict[str, Any] | None = (
            hub.api("GET", f"/users/{user}").json()["servers"].get(workspace)
        )
        if model and model["ready"]:
            return model
        assert time.monotonic() < deadline, (
            f"{user}/{workspace} not ready in {timeout}s\n{hub.log_tail()}"
        )
        time.sleep(poll)


def wait_gone(
    hub: HubProcess, user: str, workspace: str, timeout: float = 60, poll: float = 0.5
) -> None:
    """Until the Hub no longer lists `user`'s named server `workspace`: stopped, or found
    dead by the Hub's poll."""
    deadline = time.monotonic() + timeout
    while hub.api("GET", f"/users/{user}").json()["servers"].get(workspace) is not None:
        assert time.monotonic() < deadline, (
            f"{user}/{workspace} still listed after {timeout}s\n{hub.log_tail()}"
        )
        time.sleep(poll)


def start_server(
    hub: HubProcess,
    browser: Browser,
    user: str,
    workspace: str,
    timeout: float = 300,
    **options: str,
) -> dict[str, Any]:
    """Spawn `user`'s named server `workspace` (small profile, plus the spawn form's
    `options`, e.g. `repo_url`) through the Hub API as that user and wait until the Hub
    reports it ready; its model."""
    r = browser.api(
        "POST", f"/users/{user}/servers/{workspace}", json={"profile": "small", **options}
    )
    assert r.status_code in (201, 202), r.text
    return wait_ready(hub, user, workspace, timeout)


def start_workspace(
    hub: HubProcess, browser: Browser, user: str, workspace: str, timeout: float = 300
) -> dict[str, str]:
    """`start_server` (small profile), with a fresh token of the user's taken first; an auth
    header with it, for the calls into the workspace."""
    token = user_token(browser, user, f"e2e {workspace}")
    start_server(hub, browser, user, workspace, timeout)
    return {"Authorization": f"token {token}"}
