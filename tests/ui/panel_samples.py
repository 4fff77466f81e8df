"""Sample files the panel tests write into the lab, shared so every test module opens the same
code (the rewrite tests compare against SOURCE after a revert)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from conftest import Lab
from playwright.sync_api import TimeoutError as PlaywrightTimeout

SOURCE = """def area(width, height):
    return width*height


def perimeter(width, height):
    return 2*(width+height)
"""


def fresh_file(lab: Lab, name: str, text: str = SOURCE) -> str:
    """Write `text` into the lab under `name` so each test starts from a known file."""
    lab.write(name, text)
    return name


def code_cell(cell_id: str, source: str) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": {},
        "execution_count": None,
        "outputs": [],
        "source": source,
    }


def notebook(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def saved_form(nb: dict[str, Any]) -> str:
    """The layout Jupyter saves (indent 1, sorted keys), as a user's notebook would have."""
    return json.dumps(nb, indent=1, sort_keys=True) + "\n"


def open_notebook(page: Any, lab: Lab, name: str, nb: dict[str, Any]) -> None:
    """Write `nb` as `name`, open it in the page's workspace, and decline a kernel.

    No kernel is needed to follow or patch cells; the kernel picker may or may not open.
    """
    lab.write(name, saved_form(nb))
    page.goto(lab.url(f"lab/workspaces/{page.workspace}/tree/{name}"))
    page.wait_for_selector(".jp-Notebook .jp-CodeCell .cm-content", timeout=60_000)
    no_kernel = page.locator(".jp-Dialog button", has_text="No Kernel")
    with contextlib.suppress(PlaywrightTimeout):
        no_kernel.click(timeout=5_000)
