"""Live events in the browser: a patch applied in one tab shows in the other tab's history
without a reload, and a revert made in either shows in the other.

Two real Chromium tabs on the same `jupyter lab` (each on its own JupyterLab workspace, as
two windows of one user would be), each with the Codeyard panel open and subscribed to
`codeyard/api/events`. In the second test the patch comes from the real model through tab
A's Rewrite and Apply; the first needs no model (the patch comes from another client and the
revert from a tab's Revert button). A tab never navigates: a marker set on its `window`
survives to the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import CodeyardPanel, Lab
from panel_samples import SOURCE, fresh_file
from support.chromium import HOST_NETWORK_NOISE
from test_panel_rewrite import rewrite_until_diff

#: Seconds tab B may take to show what tab A did; the events arrive within milliseconds,
#: the rest is the history's own reload through the audit API on a loaded machine.
LIVE_WITHIN_MS = 10_000


#: The Git section asks `git/status` and `git/log` of this workspace, which is no repository:
#: those 409s are the Git section's to show ("not a repository"), not this test's.
GIT_API = "/codeyard/api/git/"


def problems(pg: Any) -> list[str]:
    """Failed requests outside the Git section, and console errors other than the browser's
    own line for each failed request (the request list names them)."""
    failed = [r for r in pg.failed_requests if GIT_API not in r]
    errors = [e for e in pg.console_errors if not e.startswith("Failed to load resource")]
    return failed + errors


def events_open(pg: Any) -> None:
    pg.wait_for_function(
        "() => document.querySelector('#codeyard-ai-panel')?.dataset.events === 'open'"
    )


@pytest.fixture
def tab_b(page: Any, lab: Lab) -> Iterator[Any]:
    """A second tab of the same browser, on a JupyterLab workspace of its own."""
    pg = page.context.new_page()
    pg.set_default_timeout(30_000)
    pg.console_errors = []
    pg.failed_requests = []
    pg.on(
        "response",
        lambda r: (
            pg.failed_requests.append(f"{r.status} {r.request.method} {r.url.split('?')[0]}")
            if r.status >= 400
            else None
        ),
    )
    pg.on(
        "console",
        lambda m: (
            pg.console_errors.append(m.text)
            if m.type == "error" and not any(n in m.text for n in HOST_NETWORK_NOISE)
            else None
        ),
    )
    pg.goto(lab.url(f"lab/workspaces/{page.workspace}-b?reset"))
    pg.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=60_000)
    pg.wait_for_selector(".jp-SideBar.jp-mod-right")
    yield pg
    pg.close()


def create(path: str, line: str) -> str:
    return f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n"


def test_a_patch_from_elsewhere_shows_in_both_tabs_and_a_revert_in_one_in_the_other(
    page: Any, panel: CodeyardPanel, tab_b: Any, lab: Lab, shot: Any
) -> None:
    """Without the model: the patch comes from another client (the notebook client, say),
    then tab A's Revert button undoes it and tab B follows."""
    name = f"from_elsewhere_{int(time.time() * 1000)}.py"
    other = CodeyardPanel(tab_b, lab)
    panel.open()
    other.open()
    events_open(page)
    events_open(tab_b)
    for pg in (page, tab_b):
        pg.evaluate("() => { window.__codeyardNoReload = 'still here'; }")

    code, applied = lab.api("POST", "patch/apply", {"diff": create(name, "x = 1")})
    assert code == 200, applied
    patch_id = applied["patch_id"]
    posted = time.monotonic()
    items = [p.history.locator(f'li[data-patch-id="{patch_id}"]') for p in (panel, other)]
    for item in items:
        item.wait_for(timeout=LIVE_WITHIN_MS)
    print(f"both tabs showed the patch {(time.monotonic() - posted) * 1000:.0f} ms after it")
    shot(tab_b, "tab-b-sees-patch")

    items[0].locator(".cy-revert").click()
    panel.wait_status(f"Reverted patch {patch_id}")
    assert not (lab.root / name).exists()
    other.history.locator(f'li[data-patch-id="{patch_id}"] .cy-history-reverted').first.wait_for(
        timeout=LIVE_WITHIN_MS
    )
    # Tab B's entry lost its Revert button: there is nothing left to revert.
    assert items[1].locator(".cy-revert").count() == 0
    shot(tab_b, "tab-b-sees-revert")
    for pg in (page, tab_b):
        assert pg.evaluate("() => window.__codeyardNoReload") == "still here"
        assert not problems(pg), problems(pg)


def test_a_patch_applied_in_one_tab_shows_in_the_other_without_reload(
    page: Any, panel: CodeyardPanel, tab_b: Any, lab: Lab, shot: Any
) -> None:
    name = fresh_file(lab, "rewrite_me.py")
    other = CodeyardPanel(tab_b, lab)
    other.open()
    events_open(tab_b)
    tab_b.evaluate("() => { window.__codeyardNoReload = 'still here'; }")
    before = other.history.locator("li[data-patch-id]").count()

    panel.open_file(name)
    panel.open()
    events_open(page)
    panel.select_lines(1, 2)
    rewrite_until_diff(panel, "Add a one-line docstring to this function.")
    panel.apply_button.click()
    status = panel.wait_status("Applied patch", "changed", "failed", "Not allowed")
    assert status.startswith("Applied patch"), status
    applied_at = time.monotonic()
    patch_id = status.split()[2]

    # Tab B: the new entry appears on its own, with its Revert button.
    item = other.history.locator(f'li[data-patch-id="{patch_id}"]')
    item.wait_for(timeout=LIVE_WITHIN_MS)
    shown_after = time.monotonic() - applied_at
    print(f"tab B showed the patch {shown_after * 1000:.0f} ms after tab A's answer")
    assert name in item.inner_text()
    assert other.history.locator("li[data-patch-id]").count() == before + 1
    assert tab_b.evaluate("() => window.__codeyardNoReload") == "still here"
    shot(tab_b, "tab-b-sees-apply")

    # And back: tab B reverts it; tab A marks it reverted, also without a reload.
    page.evaluate("() => { window.__codeyardNoReload = 'still here'; }")
    item.locator(".cy-revert").click()
    other.wait_status(f"Reverted patch {patch_id}")
    assert lab.read(name) == SOURCE
    panel.history.locator(f'li[data-patch-id="{patch_id}"] .cy-history-reverted').first.wait_for(
        timeout=LIVE_WITHIN_MS
    )
    assert page.evaluate("() => window.__codeyardNoReload") == "still here"
    assert tab_b.evaluate("() => window.__codeyardNoReload") == "still here"
    shot(page, "tab-a-sees-revert")
    assert not problems(tab_b), problems(tab_b)
    assert not problems(page), problems(page)
