"""One simulated developer, as hubtraf (jupyterhub/hubtraf) models a user: an asyncio task with
its own cookie jar that does over HTTP what a person does in a browser, and times each step.

The steps, each a method the run calls in phases (so that every user signs up, then every
user logs in, and a "login storm" is a real storm):

- `signup()`: the sign-up form (GET for its _xsrf, then POST; bcrypt `hashpw` in the Hub);
- `login()`: the login form (bcrypt `checkpw`), the home page, and an API token made with the
  login cookie, as the home page's token form does;
- `use_hub_api()`: the REST calls a client makes with that token;
- `start_workspace()`: a named workspace through the REST API, followed on its progress
  stream until ready, and where placement put it;
- `work()`: in the workspace, through the proxy: read the tree, open files, validate, apply
  and revert patches, ask the model for an explanation;
- `stop_workspace()`: delete the named server and wait until the Hub no longer lists it.

A 429 from the Hub's spawn API (its `concurrent_spawn_limit`) is retried after the answer's
Retry-After; a 429 from the model (the gateway's concurrency limit) is reported as
back-pressure and the user moves on, as the panel does.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
from load_report import BACKPRESSURE, FAILED, OK, Recorder, Sample

PASSWORD = "correct-horse-battery-7"
CODE = '''def add(a, b):
    """Return the sum of a and b."""
    return a + b


def mean(values):
    return sum(values) / len(values)
'''
XSRF_FIELD = re.compile(r'name="_xsrf" value="([^"]+)"')


def new_file_diff(path: str, line: str) -> str:
    return f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n"


class SimulatedUser:
    """A user of the Hub at `hub_url` (the proxy's public URL)."""

    def __init__(self, name: str, hub_url: str, rec: Recorder, t0: float) -> None:
        self.name = name
        self.hub_url = hub_url
        self.rec = rec
        self.t0 = t0
        self.cookies = httpx.Cookies()
        self.token = ""
        self.workspace = ""
        self.host = ""

    def client(self, timeout: float = 120.0) -> httpx.AsyncClient:
        """A client with this user's cookies; `trust_env=False`: a proxy from the
        environment must never stand between the load and the Hub."""
        return httpx.AsyncClient(
            base_url=self.hub_url,
            cookies=self.cookies,
            trust_env=False,
            timeout=timeout,
            follow_redirects=False,
        )

    async def call(
        self,
        client: httpx.AsyncClient,
        kind: str,
        method: str,
        url: str,
        expect: tuple[int, ...] = (200,),
        backpressure: tuple[int, ...] = (),
        **kw: Any,
    ) -> httpx.Response | None:
        """Send one request and record it; None when it failed (recorded with its cause)."""
        started = time.monotonic()
        try:
            r = await client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.rec.add(
                Sample(
                    kind, started - self.t0, time.monotonic() - started, FAILED, type(exc).__name__
                )
            )
            return None
        seconds = time.monotonic() - started
        if r.status_code in expect:
            self.rec.add(Sample(kind, started - self.t0, seconds, OK))
            return r
        if r.status_code in backpressure:
            self.rec.add(Sample(kind, started - self.t0, seconds, BACKPRESSURE))
            return r
        self.rec.add(Sample(kind, started - self.t0, seconds, FAILED, f"HTTP {r.status_code}"))
        return None

    def fail(self, kind: str, cause: str) -> None:
        """Record a failure found in an answer's content rather than its status."""
        self.rec.add(Sample(kind, time.monotonic() - self.t0, 0.0, FAILED, cause))

    def hub_xsrf(self) -> str:
        for cookie in self.cookies.jar:
            if cookie.name == "_xsrf" and cookie.path == "/hub/":
                return str(cookie.value)
        return ""

    async def form_xsrf(self, c: httpx.AsyncClient, kind: str, path: str) -> str | None:
        r = await self.call(c, kind, "GET", path)
        if r is None:
            return None
        self.cookies.update(r.cookies)
        m = XSRF_FIELD.search(r.text)
        return m.group(1) if m else self.hub_xsrf()

    # ---- Hub ------------------------------------------------------------------------
    async def signup(self) -> bool:
        async with self.client() as c:
            xsrf = await self.form_xsrf(c, "page: GET /hub/signup", "/hub/signup")
            if xsrf is None:
                return False
            form = {
                "_xsrf": xsrf,
                "username": self.name,
                "signup_password": PASSWORD,
                "signup_password_confirmation": PASSWORD,
            }
            r = await self.call(c, "signup: POST /hub/signup", "POST", "/hub/signup", data=form)
            if r is None:
                return False
            if "successful" not in r.text:
                self.fail("signup: POST /hub/signup", "sign-up refused")
                return False
            return True

    async def login(self) -> bool:
        async with self.client() as c:
            xsrf = await self.form_xsrf(c, "page: GET /hub/login", "/hub/login")
            if xsrf is None:
                return False
            form = {"_xsrf": xsrf, "username": self.name, "password": PASSWORD}
            r = await self.call(
                c, "login: POST /hub/login", "POST", "/hub/login", expect=(302,), data=form
            )
            if r is None:
                return False
            self.cookies.update(c.cookies)
            if await self.call(c, "page: GET /hub/home", "GET", "/hub/home") is None:
                return False
            self.cookies.update(c.cookies)
            r = await self.call(
                c,
                "hub api: POST /users/{name}/tokens",
                "POST",
                f"/hub/api/users/{self.name}/tokens",
                expect=(201,),
                json={"note": "load test"},
                headers={"X-XSRFToken": self.hub_xsrf()},
            )
            if r is None:
                return False
            self.token = r.json()["token"]
            return True

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def use_hub_api(self, calls: int) -> None:
        async with self.client() as c:
            for i in range(calls):
                if i % 2 == 0:
                    await self.call(
                        c, "hub api: GET /user", "GET", "/hub/api/user", headers=self.auth
                    )
                else:
                    await self.call(
                        c,
                        "hub api: GET /users/{name}",
                        "GET",
                        f"/hub/api/users/{self.name}",
                        headers=self.auth,
                    )

    async def start_workspace(self, workspace: str, ready_within: float) -> float | None:
        """Request the workspace and follow its progress to ready; the seconds from the
        request to ready, or None when the spawn failed (recorded)."""
        self.workspace = workspace
        path = f"/hub/api/users/{self.name}/servers/{workspace}"
        started = time.monotonic()
        async with self.client(timeout=ready_within) as c:
            while True:
                r = await self.call(
                    c,
                    "hub api: POST /users/{name}/servers/{ws}",
                    "POST",
                    path,
                    expect=(201, 202),
                    backpressure=(429,),
                    json={"profile": "small"},
                    headers=self.auth,
                )
                if r is None:
                    return None
                if r.status_code != 429:
                    break
                await asyncio.sleep(float(r.headers.get("Retry-After") or 5))
            ready = await self.follow_progress(c, f"{path}/progress", ready_within)
            seconds = time.monotonic() - started
            if not ready:
                return None
            self.rec.add(Sample("spawn: request to ready", started - self.t0, seconds, OK))
            r = await self.call(
                c,
                "hub api: GET workspace status",
                "GET",
                f"/hub/api/codeyard/workspaces/{self.name}/{workspace}/status",
                headers=self.auth,
            )
            if r is not None:
                self.host = str(r.json().get("host", "?"))
            return seconds

    async def follow_progress(self, c: httpx.AsyncClient, url: str, ready_within: float) -> bool:
        """Read the spawn's event stream until ready or failed."""
        kind = "spawn: request to ready"
        started = time.monotonic()
        try:
            async with c.stream("GET", url, headers=self.auth) as r:
                if r.status_code != 200:
                    self.fail(kind, f"progress HTTP {r.status_code}")
                    return False
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    if event.get("ready"):
                        return True
                    if event.get("failed"):
                        message = str(event.get("message", "failed"))[:80]
                        self.fail(kind, f"spawn failed: {message}")
                        return False
                    if time.monotonic() - started > ready_within:
                        break
        except httpx.HTTPError as exc:
            self.fail(kind, f"progress {type(exc).__name__}")
            return False
        self.fail(kind, "progress ended before ready")
        return False

    # ---- in the workspace -----------------------------------------------------------
    async def work(self, rounds: int, explain: bool) -> None:
        base = f"/user/{self.name}/{self.workspace}"
        async with self.client(timeout=300) as c:
            await self.call(
                c,
                "ws: PUT api/contents (save)",
                "PUT",
                f"{base}/api/contents/calc.py",
                expect=(200, 201),
                json={"type": "file", "format": "text", "content": CODE},
                headers=self.auth,
            )
            for n in range(rounds):
                await self.call(
                    c,
                    "ws: GET codeyard/api/tree",
                    "GET",
                    f"{base}/codeyard/api/tree",
                    params={"path": "", "depth": "2"},
                    headers=self.auth,
                )
                await self.call(
                    c,
                    "ws: GET codeyard/api/files",
                    "GET",
                    f"{base}/codeyard/api/files",
                    params={"path": "calc.py"},
                    headers=self.auth,
                )
                await self.call(
                    c,
                    "ws: GET api/contents (open)",
                    "GET",
                    f"{base}/api/contents/calc.py",
                    headers=self.auth,
                )
                diff = {"diff": new_file_diff(f"load-{n}.txt", f"round {n} of {self.name}")}
                await self.call(
                    c,
                    "ws: POST patch/validate",
                    "POST",
                    f"{base}/codeyard/api/patch/validate",
                    json=diff,
                    headers=self.auth,
                )
                r = await self.call(
                    c,
                    "ws: POST patch/apply",
                    "POST",
                    f"{base}/codeyard/api/patch/apply",
                    json=diff,
                    headers=self.auth,
                )
                if r is not None:
                    patch_id = r.json()["patch_id"]
                    await self.call(
                        c,
                        "ws: POST patch/{id}/revert",
                        "POST",
                        f"{base}/codeyard/api/patch/{patch_id}/revert",
                        json={},
                        headers=self.auth,
                    )
                if explain:
                    await self.call(
                        c,
                        "ws: POST explain (model)",
                        "POST",
                        f"{base}/codeyard/api/explain",
                        backpressure=(429,),
                        json={"path": "calc.py", "start_line": 1, "end_line": 3},
                        headers=self.auth,
                    )

    async def stop_workspace(self, gone_within: float = 120) -> bool:
        path = f"/hub/api/users/{self.name}/servers/{self.workspace}"
        started = time.monotonic()
        async with self.client() as c:
            r = await self.call(
                c,
                "hub api: DELETE /users/{name}/servers/{ws}",
                "DELETE",
                path,
                expect=(202, 204),
                json={"remove": True},
                headers=self.auth,
            )
            if r is None:
                return False
            while time.monotonic() - started < gone_within:
                r = await self.call(
                    c,
                    "hub api: GET /users/{name}",
                    "GET",
                    f"/hub/api/users/{self.name}",
                    headers=self.auth,
                )
                if r is not None and self.workspace not in r.json().get("servers", {}):
                    self.rec.add(
                        Sample(
                            "stop: request to gone",
                            started - self.t0,
                            time.monotonic() - started,
                            OK,
                        )
                    )
                    return True
                await asyncio.sleep(1)
        self.fail("stop: request to gone", "still listed")
        return False
