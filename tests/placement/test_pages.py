"""Admin pages: rendered for admins only, and a real browser registers a host and tests it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.chromium import CHROMIUM, CHROMIUM_FLAGS
from tornado.httpclient import AsyncHTTPClient

pytestmark = pytest.mark.asyncio
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "placement"


async def _get(service, path: str, token: str | None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"token {token}"} if token else {}
    return await AsyncHTTPClient().fetch(
        service.url + path, headers=headers, raise_error=False, follow_redirects=False
    )


async def test_pages_need_the_admin_scope(service, hub_tokens, registry) -> None:  # type: ignore[no-untyped-def]
    registry.add_server({"name": "hs1", "endpoint": "unix:///run/hs1.sock", "storage_shared": True})
    registry.place("alice")
    for path in ("", "servers", "servers/new", "workspaces?server=hs1"):
        resp = await _get(service, path, hub_tokens["admin"])
        assert resp.code == 200, path
        assert b"hub-static/css/style.min.css" in resp.body
        resp = await _get(service, path, hub_tokens["dev"])
        assert resp.code == 403, path
    resp = await _get(service, "", None)
    assert resp.code == 302 and "oauth2/authorize" in resp.headers["Location"]
    resp = await _get(service, "workspaces?user=alice", hub_tokens["admin"])
    assert b'data-user="alice" data-server="hs1"' in resp.body
    resp = await _get(service, "hub-static/css/style.min.css", None)
    assert resp.code == 200


@pytest.mark.skipif(not shutil.which(str(CHROMIUM)), reason="Debian's chromium is not installed")
async def test_browser_registers_a_server_and_sees_it_go_green(  # type: ignore[no-untyped-def]
    hub, service, engines, tmp_path
) -> None:
    if not hub.proxy_command:
        pytest.skip(
            "configurable-http-proxy unavailable: the browser needs Hub and service on one origin"
        )
    from playwright.async_api import async_playwright

    engine = engines[0]
    for part in ("ca", "cert", "key"):
        (tmp_path / f"{part}.pem").write_text(engine.client_bundle[part])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = hub.public_url + "/services/codeyard-placement/"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(base + "servers/new")
            # the Hub's login form, reached through the service's OAuth redirect
            await page.fill("input[name=username]", "admin1")
            await page.fill("input[name=password]", "anything")
            await page.click("input[type=submit], button[type=submit]")
            await page.wait_for_url(base + "servers/new")

            await page.fill("#name", "browser-hs")
            await page.fill("#endpoint", engine.endpoint)
            await page.fill("#region", "eu")
            await page.select_option("#kind", "tls")
            for part in ("ca", "cert", "key"):
                await page.set_input_files(f"#{part}", str(tmp_path / f"{part}.pem"))
            await page.click("#submit")
            await page.wait_for_url(base + "servers?*")
            row = page.locator('tr[data-server="browser-hs"]')
            assert await row.get_attribute("data-test") == "none"

            await row.locator("button[name=test]").click()
            await page.wait_for_url(base + "servers?*")
            row = page.locator('tr[data-server="browser-hs"]')
            assert await row.get_attribute("data-test") == "ok"
            ok = row.locator(".test-result .cy-ok")
            assert await ok.inner_text() == "● OK"
            assert await ok.evaluate("e => getComputedStyle(e).color") == "rgb(25, 135, 84)"
            assert "OK in" in await page.locator("#message").inner_text()
            await page.screenshot(path=str(ARTIFACTS / "servers-green.png"), full_page=True)

            await row.locator("button[name=drain]").click()
            await page.wait_for_url(base + "servers?*")
            assert (
                await page.locator('tr[data-server="browser-hs"]').get_attribute("data-state")
                == "draining"
            )
            await page.goto(base)
            assert await page.locator('[data-total="hosts"]').inner_text() == "1"
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            await browser.close()


def _hub_page(hub, user: str, path: str) -> str:  # type: ignore[no-untyped-def]
    import requests

    s = requests.Session()
    root = f"http://127.0.0.1:{hub.hub_port}/hub/"
    s.get(root + "login", timeout=10)
    r = s.post(
        root + "login",
        data={"username": user, "password": "x", "_xsrf": s.cookies.get("_xsrf", "")},
        timeout=10,
        allow_redirects=False,  # the default next URL would spawn a server
    )
    assert r.status_code == 302, r.status_code
    return s.get(root + path, timeout=10).text


async def test_hub_navigation_links_placement_for_admins_only(hub) -> None:  # type: ignore[no-untyped-def]
    for path in ("home", "token"):
        assert 'id="codeyard-placement-link"' in _hub_page(hub, "admin1", path)
        assert "codeyard-placement-link" not in _hub_page(hub, "dev1", path)


async def test_placements_page_pins_and_confirms_moves(service, hub_tokens, registry) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import urlencode

    hs1 = registry.add_server({"name": "hs1", "endpoint": "unix:///run/hs1.sock"})["id"]
    hs2 = registry.add_server({"name": "hs2", "endpoint": "unix:///run/hs2.sock"})["id"]
    registry.place("alice")
    headers = {"Authorization": f"token {hub_tokens['admin']}"}

    async def post(path: str, form: dict) -> str:  # type: ignore[type-arg]
        resp = await AsyncHTTPClient().fetch(
            service.url + path,
            method="POST",
            body=urlencode(form),
            headers=headers,
            raise_error=False,
            follow_redirects=False,
        )
        assert resp.code == 302, resp.code
        return resp.headers["Location"]

    location = await post("workspaces/alice//place", {"server": str(hs2)})
    assert "kind=danger" in location and "data+stays+on+hs1" in location
    location = await post("workspaces/alice//place", {"server": str(hs2), "confirm_data_loss": "1"})
    assert "kind=success" in location
    assert registry.get_placement("alice")["pinned_server"] == "hs2"
    assert registry.place("alice").server_name == "hs2"

    registry.update_server(hs2, {"state": "down"})
    page = (await _get(service, "workspaces", hub_tokens["admin"])).body.decode()
    assert "its data stays on hs2 until an admin confirms" in page
    assert 'name="confirm-move"' in page
    await post("workspaces/alice//confirm-move", {})
    assert registry.place("alice").server_name == "hs1"
    assert hs1
