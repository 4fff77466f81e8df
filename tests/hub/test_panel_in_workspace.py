"""The Codeyard AI panel inside a real workspace, as `make up` gives one.

A user signs up on the real Hub, a workspace container is spawned from the single-user image
(which bundles the labextension from the wheel), and Debian's Chromium opens JupyterLab
through the Hub's proxy, opens a file, selects lines and asks Explain. The answer streams
from the real model: container -> LLM gateway (Hub service) -> the vLLM that
`hub_config/vllm/with-vllm.sh` started for this run. Screenshots go to `.artifacts/hub/`.

Run: `hub_config/vllm/with-vllm.sh .venv/bin/pytest -p no:cacheprovider
tests/hub/test_panel_in_workspace.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.browser import signed_in, start_workspace
from support.chromium import chromium as launch_chromium
from support.contents_api import write_text
from support.hub import REPO, HubProcess

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "panel"
CODE = '''def add(a, b):
    """Return the sum of a and b."""
    return a + b


def twice(x):
    return add(x, x)
'''
ARTIFACTS = REPO / ".artifacts" / "hub"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def test_panel_explains_a_selection_in_a_spawned_workspace(
    model_hub: HubProcess, users: Any, chromium: Any
) -> None:
    hub = model_hub
    user = users.alice
    b = signed_in(hub.url, user, PASSWORD)
    auth = start_workspace(hub, b, user, WS)
    base = f"{hub.url}/user/{user}/{WS}"
    write_text(base, "calc.py", CODE, auth)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    failed: list[str] = []
    page.on(
        "response",
        lambda resp: failed.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None,
    )
    try:
        # Log in through the Hub's own form, as a person would.
        page.goto(f"{hub.url}/hub/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", PASSWORD)
        page.click("#login_submit")
        page.wait_for_url("**/hub/**")
        page.goto(f"{base}/lab/tree/calc.py")
        editor = page.locator(".jp-FileEditor:visible .cm-content")
        editor.wait_for(state="visible", timeout=120_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-FileEditor .cm-content')]"
            ".some(e => e.innerText.includes('def twice'))"
        )

        tab = page.locator('.jp-SideBar.jp-mod-right li[data-id="codeyard-ai-panel"]')
        tab.wait_for()
        root = page.locator("#codeyard-ai-panel")
        if not root.is_visible():
            tab.click()
        root.wait_for(state="visible")
        # The panel's health check went container -> gateway -> vLLM.
        root.locator('.cy-context-gateway[data-state="healthy"]').wait_for(timeout=60_000)
        assert "Model: smollm2" in root.locator(".cy-context").inner_text()

        lines = page.locator(".jp-FileEditor:visible .cm-line")
        lines.nth(0).click(position={"x": 1, "y": 5})
        page.keyboard.press("Home")
        for _ in range(2):
            page.keyboard.press("Shift+ArrowDown")
        page.keyboard.press("Shift+End")
        page.wait_for_function(
            "() => document.querySelector('#codeyard-ai-panel .cy-context')"
            ".textContent.includes('lines 1\u20133')"
        )
        page.screenshot(path=str(ARTIFACTS / "panel-in-workspace-selection.png"))

        root.locator(".cy-explain").click()
        # Streamed: text is in the panel while the answer is still arriving.
        page.wait_for_function(
            """() => {
                const out = document.querySelector('#codeyard-ai-panel .cy-explain-output');
                return out && out.dataset.state === 'streaming'
                    && out.textContent.trim().length > 0;
            }""",
            timeout=180_000,
        )
        page.screenshot(path=str(ARTIFACTS / "panel-in-workspace-streaming.png"))
        page.wait_for_function(
            """() => {
                const s = document.querySelector('#codeyard-ai-panel .cy-status');
                return s && /Explained|error|unavailable|failed/.test(s.textContent);
            }""",
            timeout=180_000,
        )
        status = root.locator(".cy-status").inner_text()
        assert status.startswith("Explained"), status
        answer = root.locator(".cy-explain-output").inner_text().strip()
        assert answer, "no text in the panel"
        page.screenshot(path=str(ARTIFACTS / "panel-in-workspace-explained.png"))
        print(f"panel status: {status!r}; answer: {answer[:200]!r}; failed requests: {failed}")
    finally:
        context.close()
