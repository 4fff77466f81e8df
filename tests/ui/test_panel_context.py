"""The Codeyard AI panel follows what the user is on: the active file, the active notebook cell,
a reload, and the gateway's health (healthy or down), in a real JupyterLab through Chromium.

The model is the real SmolLM2 behind the real gateway, so tests assert on what arrives, never
on its wording.
"""

from __future__ import annotations

import json
from typing import Any

from conftest import CodeyardPanel, Lab
from panel_samples import SOURCE, code_cell, fresh_file, notebook, open_notebook

SOURCE_JS = """function add(a, b) {
  return a + b;
}
"""


DASH = "\u2013"  # the panel writes line ranges with an en dash


def test_panel_opens_and_follows_the_active_file(
    page: Any, panel: CodeyardPanel, lab: Lab, shot: Any
) -> None:
    fresh_file(lab, "follow.py")
    fresh_file(lab, "other.js", SOURCE_JS)
    panel.open_file("follow.py")
    panel.open()
    ctx = panel.context
    ctx.get_by_text("follow.py").wait_for()
    assert f"whole file (lines 1{DASH}6)" in ctx.inner_text()

    panel.select_lines(2, 2)
    panel.wait_context(f"lines 2{DASH}2")
    shot(page, "selection")

    panel.open_file("other.js")
    panel.open()
    panel.context.get_by_text("other.js").wait_for()
    # The panel asks GET codeyard/api/status when shown: the served model and its health.
    ctx.locator('.cy-context-gateway[data-state="healthy"]').wait_for(timeout=30_000)
    assert "Gateway: healthy (answered in" in ctx.inner_text()
    assert "Model: smollm2" in ctx.inner_text()
    shot(page, "model-and-health")
    assert not page.console_errors, (page.console_errors, page.failed_requests)


def test_panel_follows_the_active_notebook_cell(
    page: Any, panel: CodeyardPanel, lab: Lab, shot: Any
) -> None:
    nb = notebook(
        code_cell("first-cell", "x = 1"), code_cell("second-cell", "def f(a):\n    return a * 2")
    )
    open_notebook(page, lab, "cells.ipynb", nb)
    panel.open()
    page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content").click()
    panel.wait_context("cell 2")
    assert "cells.ipynb" in panel.context.inner_text()
    shot(page, "cell")

    # Explain is about that cell: the server reads the cell's source by its id.
    with page.expect_request(
        lambda r: r.url.split("?")[0].endswith("codeyard/api/explain")
    ) as sent:
        panel.explain_button.click()
    assert json.loads(sent.value.post_data)["cell_id"] == "second-cell"
    status = panel.wait_status("Explained", "error", "failed", "unavailable")
    assert status.startswith("Explained"), status
    assert panel.explain_output.inner_text().strip()
    shot(page, "cell-explained")


def test_open_panel_comes_back_after_a_reload(page: Any, panel: CodeyardPanel, lab: Lab) -> None:
    panel.open_file(fresh_file(lab, "restore.py"))
    panel.open()
    page.wait_for_timeout(1500)  # the workspace layout is saved on a short debounce
    page.reload()
    page.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=60_000)
    panel.root.wait_for(state="visible")
    panel.wait_context("restore.py")


def test_gateway_down_is_shown_in_words(browser: Any, lab_without_model: Lab, shot: Any) -> None:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.workspace = "gateway-down"
    try:
        lab_without_model.write("down.py", SOURCE)
        down = CodeyardPanel(pg, lab_without_model)
        down.open_file("down.py")
        down.open()
        gateway = down.context.locator(".cy-context-gateway")
        down.context.locator('.cy-context-gateway[data-state="down"]').wait_for()
        text = gateway.inner_text()
        assert text.startswith("Gateway: unavailable at"), text
        assert "is not reachable" in text, text
        assert "Model: smollm2" in down.context.inner_text()
        down.select_lines(1, 2)
        down.explain_button.click()
        status = down.wait_status("unavailable", timeout=30_000)
        assert status.startswith("The model gateway is unavailable right now:"), status
        assert "not reachable" in status
        # The failed call keeps the gateway line in the server's words, and the model's name.
        assert gateway.inner_text().startswith("Gateway: unavailable at"), gateway.inner_text()
        assert "The model gateway is unavailable" not in gateway.inner_text()
        assert "Model: smollm2" in down.context.inner_text()
        shot(pg, "gateway-down")
    finally:
        context.close()
