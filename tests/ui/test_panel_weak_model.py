"""The panel when the model is weak: a proposal that breaks parsing gets a warning and Apply
needs "Apply anyway"; a rewrite cut off at max_tokens offers a smaller selection, more tokens
and the raw answer; the layout holds at a 320 px panel and at 1500x950.

The rewrite answer is replaced with Playwright's `page.route`: what is under test is the
panel's gate and next steps, not the model, and SmolLM2 cannot be steered to one exact bad
proposal. Everything else is real: the panel asks the real server's `patch/validate` for the
checks (that is what the gate goes by), and Apply writes through the real `patch/apply`.
Screenshots also go to /tmp/codeyard-shots/ for a person to look at.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from conftest import CodeyardPanel, Lab
from panel_samples import SOURCE, fresh_file

from codeyard.server_extension.patches.difftext import unified_diff

SHOTS = Path("/tmp/codeyard-shots")
# The click report's shape: a docstring request answered with a future import mid-file.
BROKEN = SOURCE.replace(
    "def perimeter(width, height):\n",
    'from __future__ import annotations\ndef perimeter(width, height):\n    """Perimeter."""\n',
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def save(page: Any, panel: CodeyardPanel, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-page.png"))
    panel.root.screenshot(path=str(SHOTS / f"{name}-panel.png"))


def narrow_panel(page: Any, panel: CodeyardPanel, width: int = 320) -> float:
    """Drag the split handle left of the right side area until the panel is `width` px."""
    box = panel.root.bounding_box()
    handle_x = box["x"] - 2
    y = box["y"] + 200
    page.mouse.move(handle_x, y)
    page.mouse.down()
    page.mouse.move(handle_x + (box["width"] - width), y, steps=5)
    page.mouse.up()
    page.wait_for_timeout(300)
    return float(panel.root.bounding_box()["width"])


def no_horizontal_overflow(panel: CodeyardPanel) -> bool:
    return bool(panel.root.evaluate("n => n.scrollWidth <= n.clientWidth + 1"))


def route_rewrite(page: Any, answers: list[tuple[int, dict[str, Any]]], sent: list[Any]) -> None:
    """Answer the next `codeyard/api/rewrite` calls with `answers`, recording the bodies."""

    def handle(route: Any) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        status, body = answers.pop(0)
        route.fulfill(status=status, content_type="application/json", body=json.dumps(body))

    page.route("**/codeyard/api/rewrite*", handle)


def test_a_proposal_that_breaks_parsing_warns_and_apply_needs_confirmation(
    page: Any, panel: CodeyardPanel, lab: Lab
) -> None:
    page.set_viewport_size({"width": 1500, "height": 950})
    name = fresh_file(lab, "weak_broken.py")
    panel.open_file(name)
    panel.open()
    panel.select_lines(5, 6)
    diff = unified_diff(name, SOURCE, BROKEN)
    answer = {
        "diff": diff,
        "base": {name: sha(SOURCE)},
        "unchanged": False,
        "usage": {"model": "smollm2", "total_tokens": 99, "max_tokens": 200},
        "finish_reason": "stop",
        "raw": "```python\n...\n```",
        # The gate must go by the server's validate, not by what the answer claims.
        "checks": {
            "parses": True,
            "parser": "python-ast",
            "error": None,
            "outside_selection": False,
        },
    }
    sent: list[Any] = []
    route_rewrite(page, [(200, answer)], sent)
    panel.instruction.fill("Add a one-line docstring.")
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("patch/validate")) as v:
        panel.rewrite_button.click()
    validated = v.value.json()
    assert validated["checks"]["parses"] is False, validated
    status = panel.wait_status("Review the proposed change")
    assert "Apply anyway" in status
    warning = panel.root.locator(".cy-checks")
    assert warning.is_visible()
    text = warning.inner_text()
    assert "This change breaks Python parsing (SyntaxError at line 5)" in text, text
    assert "outside your selection" not in text
    apply = panel.apply_button
    assert apply.is_disabled()
    confirm = panel.root.locator(".cy-confirm")
    assert confirm.is_visible() and not confirm.is_checked()
    assert "Python does not parse" in panel.root.locator(".cy-checks-coverage").inner_text()
    save(page, panel, "gate-1500x950")
    assert no_horizontal_overflow(panel)

    # The Apply shortcut is refused in words while the box is unticked.
    panel.root.locator(".cy-instruction").focus()
    page.keyboard.press("Control+Alt+Enter")
    panel.wait_status("tick “Apply anyway” first")
    assert lab.read(name) == SOURCE

    width = narrow_panel(page, panel)
    assert 300 <= width <= 340, width
    save(page, panel, "gate-320")
    assert no_horizontal_overflow(panel)

    # Keyboard only: focus the checkbox, tick it with Space, Tab to Apply and press Enter.
    confirm.focus()
    page.keyboard.press("Space")
    assert confirm.is_checked()
    assert apply.is_enabled()
    apply.focus()
    page.keyboard.press("Enter")
    status = panel.wait_status("Applied patch", "changed", "failed", "Not allowed")
    assert status.startswith("Applied patch"), status
    assert lab.read(name) == BROKEN
    code, _ = lab.api("POST", f"patch/{status.split()[2]}/revert", {})
    assert code == 200
    assert lab.read(name) == SOURCE
    assert sent[0]["start_line"] == 5 and sent[0]["end_line"] == 6


def test_a_cut_off_rewrite_offers_next_steps_and_the_status_line_keeps_its_place(
    page: Any, panel: CodeyardPanel, lab: Lab
) -> None:
    page.set_viewport_size({"width": 1500, "height": 950})
    name = fresh_file(lab, "weak_cutoff.py")
    panel.open_file(name)
    panel.open()
    # The bound comes from GET status (the lab's max_tokens_limit is the default 2048).
    panel.page.wait_for_function(
        "() => document.querySelector('#codeyard-ai-panel .cy-context-gateway')"
        ".dataset.state === 'healthy'"
    )
    panel.select_lines(1, 6)
    truncated = {
        "error": "answer_truncated",
        "message": "the model's answer was cut off at max_tokens=200 before it held usable "
        "code; allow more tokens",
        "finish_reason": "length",
        "raw": "Sure! Here is the function with a docstring:\n\n```python\ndef area(width,",
        "usage": {"model": "smollm2", "max_tokens": 200, "finish_reason": "length"},
    }
    unchanged = {
        "diff": "",
        "base": {name: sha(SOURCE)},
        "unchanged": True,
        "usage": {"model": "smollm2", "max_tokens": 400},
        "finish_reason": "stop",
        "raw": "```python\ndef area(width, height):\n    return width*height\n```",
        "checks": {
            "parses": True,
            "parser": "python-ast",
            "error": None,
            "outside_selection": False,
        },
    }
    sent: list[Any] = []
    route_rewrite(page, [(422, truncated), (200, unchanged), (422, truncated)], sent)
    panel.instruction.fill("Add a one-line docstring to each function.")
    panel.rewrite_button.click()
    panel.wait_status("could not produce a usable answer")
    steps = panel.root.locator(".cy-next")
    steps.wait_for()
    assert "ran out of tokens (max_tokens 200)" in steps.inner_text()

    # The red status line stays above the Explain heading, whatever its length.
    status_box = panel.root.locator(".cy-status").bounding_box()
    heading_box = panel.root.locator(".cy-section-explain h3").bounding_box()
    assert status_box["y"] + status_box["height"] <= heading_box["y"] + 0.5
    save(page, panel, "next-steps-1500x950")

    raw_button = panel.root.locator(".cy-show-raw")
    assert raw_button.get_attribute("aria-expanded") == "false"
    raw_button.focus()
    page.keyboard.press("Enter")
    raw = panel.root.locator(".cy-raw")
    assert raw.is_visible() and "Here is the function" in raw.inner_text()
    assert raw_button.get_attribute("aria-expanded") == "true"

    width = narrow_panel(page, panel)
    assert 300 <= width <= 340, width
    save(page, panel, "next-steps-320")
    assert no_horizontal_overflow(panel)
    status_box = panel.root.locator(".cy-status").bounding_box()
    heading_box = panel.root.locator(".cy-section-explain h3").bounding_box()
    assert status_box["y"] + status_box["height"] <= heading_box["y"] + 0.5

    panel.root.locator(".cy-retry-tokens").click()
    panel.wait_status("proposed no change")
    assert sent[1]["max_tokens"] == 400, sent[1]
    assert (sent[1]["start_line"], sent[1]["end_line"]) == (1, 6)
    # No change proposed: the next steps stay on offer, now with this answer's raw text.
    panel.root.locator(".cy-retry-smaller").click()
    panel.wait_status("could not produce a usable answer")
    assert (sent[2]["start_line"], sent[2]["end_line"]) == (1, 3), sent[2]
    assert lab.read(name) == SOURCE
