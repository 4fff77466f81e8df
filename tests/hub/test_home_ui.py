"""The Codeyard home page in Chromium, on the real Hub, proxy and dockerd: it lists the
user's workspaces with repository, size, host and state and has no "Start My Server"; a
workspace is created with the keyboard alone and its progress shows inline; Stop, Open on a
stopped workspace (auto-start, then JupyterLab), and Delete.

The tests run in file order and share one Hub, one browser login and one workspace.
Screenshots: /tmp/codeyard-shots/home-*.png.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.chromium import HubPage, chromium
from support.hub import HubProcess

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "kbd"
SPAWN_MS = 300_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def alice(browser: Any, hub: HubProcess, users) -> Iterator[HubPage]:
    user = HubPage(browser, hub.url)
    user.signup(users.alice, PASSWORD)
    user.login(users.alice, PASSWORD)
    yield user
    user.close()


def row(alice: HubPage, name: str) -> Any:
    return alice.page.locator(f'#cy-rows tr[data-workspace="{name}"]')


def wait_state(alice: HubPage, name: str, state: str, timeout: float = SPAWN_MS) -> None:
    alice.page.wait_for_selector(
        f'#cy-rows tr[data-workspace="{name}"][data-state="{state}"]', timeout=timeout
    )


def server(hub: HubProcess, user: str, name: str) -> dict[str, Any] | None:
    servers = hub.api("GET", f"/users/{user}?include_stopped_servers=1").json()["servers"]
    return servers.get(name)


def test_home_lists_workspaces_and_has_no_start_my_server(alice: HubPage) -> None:
    page = alice.page
    assert page.url.endswith("/hub/home")
    page.wait_for_selector("#cy-empty:not([hidden])")
    text = page.inner_text("body")
    assert "My Server" not in text
    assert page.locator("#start").count() == 0  # JupyterHub's own start button
    headers = page.locator("#cy-workspaces thead th").all_inner_texts()
    assert headers == [
        "Name",
        "Repository and branch",
        "Size",
        "Host",
        "State",
        "Last activity",
        "Actions",
    ]
    # The size and image choices are the spawner's own profiles and allow-list.
    sizes = page.locator("#cy-profile option").evaluate_all("os => os.map(o => o.value)")
    assert sizes == ["small", "medium", "large"]
    assert page.locator("#cy-image option").count() >= 1
    # The credential field is off until an https:// URL is typed, and never part of the
    # form's data: it goes to the Hub's encrypted store, not into the workspace's options.
    credential = page.locator("#cy-credential")
    assert credential.get_attribute("type") == "password"
    assert credential.is_disabled() and credential.get_attribute("name") is None
    assert "stored encrypted" in page.inner_text("#cy-credential-help")
    alice.shot("home-empty")
    assert alice.console_errors == []


def test_create_a_workspace_with_the_keyboard_shows_progress_then_running(
    alice: HubPage, hub: HubProcess, git_server, users
) -> None:
    page = alice.page
    page.locator("body").focus()
    for _ in range(40):
        if page.evaluate("document.activeElement.id") == "cy-name":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "cy-name"
    page.keyboard.type(WS)
    page.keyboard.press("Tab")
    page.keyboard.type(git_server.url("project.git"))
    page.keyboard.press("Tab")
    page.keyboard.type("feature")
    page.keyboard.press("Tab")  # the disabled credential field is skipped
    assert page.evaluate("document.activeElement.id") == "cy-profile"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "cy-image"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "cy-create"
    page.keyboard.press("Enter")

    # Progress inline, under the form, with the spawner's own messages.
    page.wait_for_selector("#cy-new-progress:not([hidden])")
    page.wait_for_function(
        "() => document.querySelector('#cy-new-progress .cy-progress-log')"
        ".textContent.includes('Cloning')",
        timeout=SPAWN_MS,
    )
    alice.shot("home-progress")
    wait_state(alice, WS, "RUNNING")
    r = row(alice, WS)
    assert r.locator(".cy-host").inner_text() == "local"
    assert r.locator(".cy-size").inner_text().startswith("Small")
    assert r.locator(".cy-repo-url").inner_text() == git_server.url("project.git")
    assert r.locator(".cy-branch").inner_text() == "feature"
    assert r.locator(".cy-activity time").count() == 1
    assert r.locator(".cy-stop").is_visible() and not r.locator(".cy-start").is_visible()
    log = page.text_content("#cy-new-progress .cy-progress-log") or ""
    for step in ("Placing workspace", "Cloning", "Creating container", "Starting Jupyter"):
        assert step in log, log
    model = server(hub, users.alice, WS)
    assert model is not None and model["ready"], model
    alice.shot("home-running")
    assert alice.console_errors == []


def test_stop_with_the_keyboard_shows_stopped(alice: HubPage, hub: HubProcess, users) -> None:
    page = alice.page
    stop = row(alice, WS).locator(".cy-stop")
    assert stop.get_attribute("aria-label") == f"Stop workspace {WS}"
    stop.focus()
    page.keyboard.press("Enter")
    wait_state(alice, WS, "STOPPED", timeout=120_000)
    r = row(alice, WS)
    assert r.locator(".cy-start").is_visible() and not r.locator(".cy-stop").is_visible()
    # Focus stays in the row (on a visible button), not lost to the page.
    assert page.evaluate(
        "document.activeElement.closest('tr') && document.activeElement.closest('tr')"
        ".dataset.workspace"
    ) == (WS)
    model = server(hub, users.alice, WS)
    assert model is not None and model["stopped"], model
    alice.shot("home-stopped")


def test_open_on_a_stopped_workspace_starts_it_and_loads_jupyterlab(alice: HubPage, users) -> None:
    page = alice.page
    open_link = row(alice, WS).locator(".cy-open")
    assert open_link.get_attribute("href") == f"/user/{users.alice}/{WS}/"
    open_link.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#cy-heading")
    assert f"Starting workspace {WS}" in page.inner_text("#cy-heading")
    page.wait_for_function(
        "() => document.querySelector('#progress-log').textContent.includes('Placing workspace')"
    )
    alice.shot("autostart-progress")
    page.wait_for_url(f"**/user/{users.alice}/{WS}/lab**", timeout=SPAWN_MS)
    page.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=120_000)
    # The cloned branch's files, in JupyterLab's file browser.
    page.wait_for_selector(".jp-DirListing-item[title*='FEATURE.md']", timeout=60_000)
    alice.shot("autostart-lab")
    # The Hub answers a link to a stopped server with 424 (the not-running page) by design.
    assert all("424" in e for e in alice.console_errors), alice.console_errors
    alice.console_errors.clear()


def test_delete_removes_the_row(alice: HubPage, hub: HubProcess, users) -> None:
    page = alice.page
    alice.goto("/hub/home")
    wait_state(alice, WS, "RUNNING", timeout=60_000)
    delete = row(alice, WS).locator(".cy-delete")
    assert delete.get_attribute("aria-label") == f"Delete workspace {WS}"
    delete.focus()
    page.keyboard.press("Enter")  # the confirm dialog is accepted
    row(alice, WS).wait_for(state="detached", timeout=120_000)
    deadline = time.monotonic() + 60
    while server(hub, users.alice, WS) is not None:
        assert time.monotonic() < deadline, "the Hub still has the workspace"
        time.sleep(0.5)
    page.wait_for_selector("#cy-empty:not([hidden])")
    alice.shot("home-deleted")
    assert alice.console_errors == []


def test_a_failed_clone_shows_error_with_its_reason(alice: HubPage, git_server, users) -> None:
    page = alice.page
    page.fill("#cy-name", "broken")
    page.fill("#cy-repo", git_server.url("missing.git"))
    page.click("#cy-create")
    wait_state(alice, "broken", "ERROR")
    reason = row(alice, "broken").locator(".cy-reason").inner_text()
    assert "git clone failed" in reason, reason
    alice.shot("home-error")
