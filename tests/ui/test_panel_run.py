"""The panel's Run section in a real JupyterLab in Chromium: a command's output and exit code
appear, a run can be cancelled, and a failing test run offers "Explain this failure", which
sends the end of the output to the real model and streams its explanation.

Screenshots: `.artifacts/ui/test_run_shows_output_and_exit_code-*.png`,
`.artifacts/ui/test_failing_run_is_explained-*.png`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

RUN = "#codeyard-ai-panel .cy-section-run"


def wait_state(page: Any, state: str, timeout: float = 60_000) -> None:
    page.wait_for_function(
        "([sel, s]) => document.querySelector(sel)?.dataset.state === s",
        arg=[RUN, state],
        timeout=timeout,
    )


def wait_output(page: Any, text: str, timeout: float = 60_000) -> None:
    page.wait_for_function(
        "([sel, t]) => (document.querySelector(sel + ' .cy-run-output')?.textContent ?? '')"
        ".includes(t)",
        arg=[RUN, text],
        timeout=timeout,
    )


def assert_no_errors_of_ours(page: Any) -> None:
    """No exec or explain request failed, and every console error is a failed load (of
    another section's request, such as git/status in a folder that is no repository)."""
    ours = [r for r in page.failed_requests if "/codeyard/api/exec" in r or "/explain" in r]
    assert not ours, page.failed_requests
    assert len(page.console_errors) <= len(page.failed_requests), (
        page.console_errors,
        page.failed_requests,
    )
    assert all(e.startswith("Failed to load resource") for e in page.console_errors)


def test_run_shows_output_and_exit_code(page: Any, panel: Any, shot: Any) -> None:
    panel.open()
    run = page.locator(RUN)
    command = run.locator(".cy-run-command")
    # The box starts with the `runCommand` setting's default.
    assert command.input_value() == "pytest -q"

    command.fill("echo hello from run; echo a warning >&2; exit 3")
    run.locator(".cy-run").click()
    wait_state(page, "exited")
    output = run.locator(".cy-run-output")
    assert "hello from run" in output.inner_text()
    assert run.locator(".cy-run-stderr").inner_text().strip() == "a warning"
    assert run.get_attribute("data-exit-code") == "3"
    assert run.locator(".cy-run-state").inner_text().startswith("exit code 3")
    assert run.locator(".cy-run-explain").is_visible()
    shot(page, "exit-3")

    # With the events socket open, output comes as events: the section asks GET exec/<id>
    # once at the start and then only every 3 s to fill gaps (it polls every 0.5 s without).
    page.wait_for_function(
        "() => document.querySelector('#codeyard-ai-panel')?.dataset.events === 'open'"
    )
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/codeyard/api/exec/" in r.url else None)
    command.fill("echo first; sleep 2; echo second")
    began = time.monotonic()
    command.press("Enter")
    wait_state(page, "exited")
    took = time.monotonic() - began
    assert output.inner_text() == "first\nsecond\n"
    # Polling alone would have asked about every 0.5 s: at least 4 times in 2 s.
    assert 1 <= len(polls) <= 2 + int(took / 3), (polls, took)
    assert run.locator(".cy-run-state").inner_text().startswith("exit code 0")
    assert not run.locator(".cy-run-explain").is_visible()

    command.fill("echo started; sleep 60")
    run.locator(".cy-run").click()
    wait_output(page, "started")
    assert run.locator(".cy-run").is_disabled()
    run.locator(".cy-run-cancel").click()
    wait_state(page, "cancelled", timeout=20_000)
    assert run.locator(".cy-run-state").inner_text().startswith("cancelled")
    assert not run.locator(".cy-run").is_disabled()
    shot(page, "cancelled")
    assert not [r for r in page.failed_requests if "/codeyard/api/exec" in r], page.failed_requests
    assert_no_errors_of_ours(page)


def test_failing_run_is_explained(page: Any, panel: Any, lab: Any, shot: Any) -> None:
    lab.write("calc.py", "def add(a, b):\n    return a - b\n")
    lab.write(
        "tests/test_calc.py",
        "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    )
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: (
            sent.append(json.loads(r.post_data or "{}"))
            if r.url.split("?")[0].endswith("/codeyard/api/explain")
            else None
        ),
    )
    panel.open()
    run = page.locator(RUN)
    run.locator(".cy-run-command").fill(f"{sys.executable} -m pytest -q -p no:cacheprovider tests")
    run.locator(".cy-run").click()
    wait_state(page, "exited", timeout=120_000)
    assert run.get_attribute("data-exit-code") == "1"
    assert "1 failed" in run.locator(".cy-run-output").inner_text()
    explain = run.locator(".cy-run-explain")
    assert explain.is_visible()
    shot(page, "failed")

    explain.click()
    # The failure's own location is what Explain is about: the test file, up to line 5.
    panel.wait_status("tests/test_calc.py lines 1\u20135", "Explained", timeout=60_000)
    status = panel.wait_status("Explained", "error", "unavailable")
    assert status.startswith("Explained"), status
    assert panel.explain_output.inner_text().strip()
    (body,) = sent
    assert (body["path"], body["start_line"], body["end_line"]) == ("tests/test_calc.py", 1, 5)
    assert "`" + f"{sys.executable} -m pytest" in body["question"]
    assert "exit code 1" in body["question"]
    assert "AssertionError" in body["question"] and "1 failed" in body["question"]
    assert len(body["question"]) <= 2000
    # The failure report is quoted from its header, without what pytest printed before it.
    assert "= FAILURES =" in body["question"]
    assert "DeprecationWarning" not in body["question"]
    shot(page, "explained")
    assert_no_errors_of_ours(page)
    print("failed requests (other sections):", page.failed_requests)
