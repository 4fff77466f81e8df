"""A user's served HTML cannot run script as another user, in path mode and in subdomain mode.

Bob writes `probe.html` in his workspace, which is shared with Alice (JupyterHub's shares,
the way colleagues open each other's servers; made by an admin here). Alice, logged in in
Chromium, opens the file through bob's `/files/` URL. Its script tries to act as Alice:
read her cookies, read the Hub's home page (which holds her name and the `_xsrf` token that
would let it create an API token for her) and the Hub API's `/user`. It writes what it got
into its own page, where the test reads it.

- Path mode (the default): the page is on the Hub's origin, and jupyter_server serves files
  with `Content-Security-Policy: sandbox allow-scripts`, so the script runs with an opaque
  origin: no cookies, and the Hub's answers are cross-origin, unreadable.
- Subdomain mode (`CODEYARD_SUBDOMAIN_HOST`): the page is on `bob.localhost`, the Hub on
  `localhost` (Chromium resolves `*.localhost` to loopback): cross-origin as well.

Then the same probe runs unsandboxed on bob's JupyterLab page (standing in for a notebook's
HTML output). In subdomain mode it still reads nothing of Alice's Hub session; in path mode
it does, which is the limit docs/hub.md states and the reason to set the subdomain host.

The control: the same probe run on a Hub page as Alice (same origin, no sandbox) does read
her cookies and her home page with its `_xsrf` token, so a probe that reads nothing means
the browser refused it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import HubLauncher, Users
from support.browser import wait_ready
from support.chromium import HubPage, chromium
from support.contents_api import write_text
from support.hub import PROJECT_ADMIN_SCOPES, HubProcess
from support.processes import free_port

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "web"

# The probe as a function body: `hub` is the Hub's origin ("" = this page's own origin).
PROBE_JS = """
async (hub) => {
  const out = {};
  try { out.cookie = document.cookie; } catch (e) { out.cookie_error = String(e.name); }
  for (const [key, path] of [["home", "/hub/home"], ["user", "/hub/api/user"]]) {
    try {
      const r = await fetch(hub + path, { credentials: "include" });
      out[key] = (await r.text()).slice(0, 20000);
      out[key + "_status"] = r.status;
    } catch (e) {
      out[key + "_error"] = String(e);
    }
  }
  try { out.origin = window.origin; } catch (e) { out.origin = "?"; }
  return out;
}
"""

PROBE_HTML = (
    "<!doctype html><html><body><pre id='result'>pending</pre><script>"
    "const probe = " + PROBE_JS.strip() + ";\n"
    "probe(HUB).then(r => { document.getElementById('result').textContent = JSON.stringify(r); });"
    "</script></body></html>"
)


@pytest.fixture(scope="module", params=["path", "subdomain"])
def mode_hub(request: pytest.FixtureRequest, hubs: HubLauncher) -> Iterator[tuple[str, HubProcess]]:
    mode = request.param
    port = free_port()
    env = {}
    if mode == "subdomain":
        env["CODEYARD_SUBDOMAIN_HOST"] = f"http://localhost:{port}"
    scopes = (*PROJECT_ADMIN_SCOPES, "shares")
    with hubs.running(f"hub-{mode}", port=port, extra_env=env, admin_scopes=scopes) as hub:
        yield mode, hub


def _probe_result(page: Any) -> dict[str, Any]:
    page.wait_for_function(
        "() => document.getElementById('result')?.textContent !== 'pending'", timeout=30_000
    )
    return json.loads(page.inner_text("#result"))


def test_served_html_cannot_act_as_the_viewer(
    mode_hub: tuple[str, HubProcess], users: Users
) -> None:
    mode, hub = mode_hub
    public = f"http://localhost:{hub.port}" if mode == "subdomain" else hub.url
    with chromium() as browser:
        # Both sign up and log in in the browser (Python's cookie jar mishandles cookies of
        # a bare `localhost`); NativeAuthenticator makes the Hub user at first login.
        bob = HubPage(browser, public)
        try:
            bob.signup(users.bob, PASSWORD)
            bob.login(users.bob, PASSWORD)
        finally:
            bob.close()
        alice = HubPage(browser, public)
        try:
            alice.signup(users.alice, PASSWORD)
            alice.login(users.alice, PASSWORD)

            # Bob's workspace, started and shared with Alice by the test's admin service
            # (Codeyard's default roles give users no `shares` scope; an admin shares).
            r = hub.api("POST", f"/users/{users.bob}/servers/{WS}", json={"profile": "small"})
            assert r.status_code in (201, 202), r.text
            wait_ready(hub, users.bob, WS)
            r = hub.api("POST", f"/shares/{users.bob}/{WS}", json={"user": users.alice})
            assert r.status_code in (200, 201), r.text
            token = hub.api("POST", f"/users/{users.bob}/tokens", json={"note": "probe"})
            auth = {"Authorization": f"token {token.json()['token']}"}

            # Where bob's workspace lives, as the Hub says (a subdomain URL in that mode).
            model = hub.api("GET", f"/users/{users.bob}").json()["servers"][WS]
            url = model["url"]
            ws_url = url if url.startswith("http") else public + url
            if mode == "subdomain":
                assert ws_url.startswith(f"http://{users.bob}.localhost:{hub.port}/"), ws_url
            else:
                assert ws_url.startswith(f"{hub.url}/user/{users.bob}/{WS}/"), ws_url
            # Bob's token writes the file through the Contents API. The test's resolver may
            # not know *.localhost (Chromium does): loopback, with the workspace's Host.
            html = PROBE_HTML.replace("HUB", json.dumps(public))
            split = urlsplit(ws_url)
            write_text(
                f"{hub.url}{split.path.rstrip('/')}",
                "probe.html",
                html,
                {**auth, "Host": split.netloc},
                timeout=60,
            )

            # Control: the probe on a Hub page, as Alice, reads what the attack wants.
            alice.goto("/hub/home")
            control = alice.page.evaluate(PROBE_JS, "")
            # (The Hub API wants an _xsrf token even for a cookie GET; the page has one.)
            assert control.get("home_status") == 200, control
            assert users.alice in control["home"], control["home"][:500]
            assert "xsrf" in control["home"], control["home"][:500]
            assert control.get("cookie"), control

            # The shared file, opened by Alice (through the share's OAuth consent, if asked).
            alice.page.goto(f"{ws_url.rstrip('/')}/files/probe.html")
            if "oauth2/authorize" in alice.page.url:
                alice.page.click("input[type=submit], button[type=submit]")
            alice.page.wait_for_url("**/files/probe.html*")
            result = _probe_result(alice.page)
            served_from = alice.page.url

            # Script that is *not* sandboxed on bob's server (JupyterLab's own page stands in
            # for a notebook's HTML output or an extension): only subdomain mode keeps it
            # from Alice's Hub session.
            alice.page.goto(f"{ws_url.rstrip('/')}/lab")
            alice.page.wait_for_load_state("domcontentloaded")
            lab = alice.page.evaluate(PROBE_JS, public)
            alice.shot(f"same-origin-{mode}")
        finally:
            alice.close()

    print(f"{mode} mode: served probe saw {json.dumps(result)[:600]}")
    # It ran: the probe wrote its result.
    assert "origin" in result, result
    # It could not read Alice's cookies...
    assert not result.get("cookie"), result
    # ...nor the Hub's pages or API as Alice: every fetch failed or came back without her.
    for key in ("home", "user"):
        body = result.get(key, "")
        assert users.alice not in body, (key, body[:500])
        assert "xsrf" not in body, (key, body[:500])
    # jupyter_server's CSP sandbox gives the script an opaque origin in both modes; in
    # subdomain mode the page is on bob's own host besides.
    assert result["origin"] == "null", result
    if mode == "subdomain":
        assert served_from.startswith(f"http://{users.bob}.localhost:{hub.port}/"), served_from
    else:
        assert served_from.startswith(f"{hub.url}/user/{users.bob}/{WS}/files/"), served_from
    print(f"{mode} mode: a script on bob's JupyterLab page saw {json.dumps(lab)[:300]}")
    if mode == "subdomain":
        assert lab["origin"] == f"http://{users.bob}.localhost:{hub.port}", lab
        assert users.alice not in lab.get("home", ""), lab.get("home", "")[:500]
        assert "xsrf" not in lab.get("home", ""), lab.get("home", "")[:500]
    else:
        # Path mode's limit, which docs/hub.md states: same origin as the Hub, so such a
        # script reads Alice's Hub page. This is why a sharing site sets subdomain_host.
        assert lab["origin"] == hub.url, lab
        assert users.alice in lab.get("home", ""), lab
