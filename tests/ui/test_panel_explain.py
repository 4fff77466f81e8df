"""Asking the Codeyard AI panel about code: Explain streams and Stop cancels, the keyboard
shortcuts, inline suggestions while typing, and the lab settings that reach the model.

The model is the real SmolLM2 behind the real gateway, so tests assert on what arrives (text,
request bodies), never on its wording.
"""

from __future__ import annotations

import json
from typing import Any

import requests
from conftest import CodeyardPanel, Lab
from panel_samples import fresh_file

OUTPUT = "#codeyard-ai-panel .cy-explain-output"


def test_explain_streams_markdown_and_stop_cancels(
    page: Any, panel: CodeyardPanel, lab: Lab, shot: Any
) -> None:
    fresh_file(lab, "explain.py")
    panel.open_file("explain.py")
    panel.open()
    panel.select_lines(1, 2)
    panel.explain_button.click()
    out = panel.explain_output
    # Streamed: the text grows over several renders before the answer is done.
    lengths: list[int] = []
    page.wait_for_function(
        f"() => document.querySelector('{OUTPUT}').textContent.length > 0", timeout=120_000
    )
    while out.get_attribute("data-state") == "streaming" and len(lengths) < 400:
        lengths.append(len(out.inner_text()))
        page.wait_for_timeout(100)
    status = panel.wait_status("Explained", "error", "failed", "unavailable")
    shot(page, "explained")
    assert "Explained" in status, status
    assert len(out.inner_text().strip()) > 20
    assert len(set(lengths)) >= 2, f"no streaming seen: {lengths[:20]}"

    # Stop: start again and stop as soon as text arrives.
    panel.question.fill("Explain every line in great detail, please.")
    panel.explain_button.click()
    page.wait_for_function(
        f"() => document.querySelector('{OUTPUT}').textContent.length > 0", timeout=120_000
    )
    panel.stop_button.click()
    assert panel.wait_status("Stopped.", timeout=10_000) == "Stopped."
    assert out.get_attribute("data-state") == "stopped"
    shot(page, "stopped")


def test_inline_suggestion_appears_while_typing(
    page: Any, panel: CodeyardPanel, lab: Lab, shot: Any
) -> None:
    # `return ` after this header is a prefix the small CPU model reliably continues
    # (tests/server_extension/test_complete.py asserts the same through the server).
    name = fresh_file(lab, "inline.py", "# add two numbers\ndef add_numbers(a, b):\n")
    editor = panel.open_file(name)
    editor.locator(".cm-line").nth(1).click()
    page.keyboard.press("End")
    page.keyboard.press("Enter")  # the editor indents the body
    page.keyboard.type("return ", delay=50)
    # A real suggestion: ghost text with content, not the error marker the completer shows
    # when the provider reports a failure.
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-GhostText')].some(
            g => g.textContent.trim().length > 0
                && !g.querySelector('.jp-GhostText-errorIndicator'))""",
        timeout=60_000,
    )
    shot(page, "ghost")
    assert lab.read(name) == "# add two numbers\ndef add_numbers(a, b):\n", "nothing is saved"


def test_shortcuts_open_the_panel_explain_and_stop(
    page: Any, panel: CodeyardPanel, lab: Lab, shot: Any
) -> None:
    name = fresh_file(lab, "keys.py")
    panel.open_file(name)
    assert not panel.root.is_visible()
    panel.select_lines(1, 2)
    page.keyboard.press("Control+Alt+e")  # codeyard:explain, also opens the panel
    panel.root.wait_for(state="visible")
    panel.wait_status("Explaining keys.py lines 1")
    page.keyboard.press("Control+Alt+s")  # codeyard:stop
    status = panel.wait_status("Stopped.", "Explained", timeout=60_000)
    assert status in ("Stopped.",) or status.startswith("Explained"), status
    shot(page, "keys")


SETTINGS = "lab/api/settings/codeyard-labextension:plugin"


def put_settings(lab: Lab, raw: str) -> None:
    r = requests.put(
        f"{lab.base}/{SETTINGS}",
        headers={"Authorization": f"token {lab.token}"},
        data=json.dumps({"raw": raw}),
        timeout=30,
    )
    assert r.status_code == 204, r.text


def test_max_tokens_and_context_lines_settings_reach_the_model(
    page: Any, panel: CodeyardPanel, lab: Lab, shot: Any
) -> None:
    fresh_file(lab, "settings.py")
    # Set as a user would in the Settings Editor (same REST call), before the page loads them.
    put_settings(lab, '{"maxTokens": 1, "contextLines": 0}')
    try:
        panel.open_file("settings.py")
        panel.open()
        panel.select_lines(5, 6)
        with page.expect_request(
            lambda r: r.url.split("?")[0].endswith("codeyard/api/explain")
        ) as sent:
            panel.explain_button.click()
        body = json.loads(sent.value.post_data)
        assert body["max_tokens"] == 1 and body["context_lines"] == 0, body
        status = panel.wait_status("Explained", "error", "failed", "unavailable")
        assert status.startswith("Explained ("), status
        # One token of answer: at most one word arrives.
        assert len(panel.explain_output.inner_text().split()) <= 1
        shot(page, "one-token")
    finally:
        put_settings(lab, "{}")
