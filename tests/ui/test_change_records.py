"""An editor save in a real JupyterLab is recorded in the audit; with `patch_only` the same save
is refused and JupyterLab's error dialog tells the user why, in the extension's own words.

Neither lab needs the model: each is started with a closed loopback port as its gateway URL
(as `lab_without_model` is), so this module runs without vLLM. The `patch_only` lab gets
`CODEYARD_PATCH_ONLY=1` in its environment, the seam a Hub uses to turn the mode on.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ARTIFACTS, Lab, _stop, start_lab
from support.processes import free_port

from codeyard.server_extension.contents_audit import PATCH_ONLY_MESSAGE

SHOTS = Path("/tmp/codeyard-shots")


def _lab(
    tmp_path_factory: pytest.TempPathFactory, labextension_dir: Path, **env: str
) -> Iterator[Lab]:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        running = start_lab(tmp_path_factory.mktemp("lab-records"), labextension_dir, closed, "t")
    yield running
    _stop(running.proc)


@pytest.fixture(scope="module")
def plain_lab(tmp_path_factory: pytest.TempPathFactory, labextension_dir: Path) -> Iterator[Lab]:
    yield from _lab(tmp_path_factory, labextension_dir)


@pytest.fixture(scope="module")
def patch_only_lab(
    tmp_path_factory: pytest.TempPathFactory, labextension_dir: Path
) -> Iterator[Lab]:
    yield from _lab(tmp_path_factory, labextension_dir, CODEYARD_PATCH_ONLY="1")


def screenshot(page: Any, name: str) -> Path:
    """Save to .artifacts/ui/ (the suite's place) and /tmp/codeyard-shots/ (for review)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"change-records-{name}.png"
    page.screenshot(path=str(path))
    shutil.copy(path, SHOTS / path.name)
    return path


def open_in_editor(browser: Any, lab: Lab, rel: str) -> Any:
    """A fresh page with `rel` open in JupyterLab's file editor, its text loaded."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    workspace = f"records-{secrets.token_hex(3)}"
    page.goto(lab.url(f"lab/workspaces/{workspace}/tree/{rel}?reset"))
    page.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=60_000)
    editor = page.locator(".jp-FileEditor:visible .cm-content")
    editor.wait_for(state="visible")
    page.wait_for_function(
        """(t) => {
            const el = [...document.querySelectorAll('.jp-FileEditor .cm-content')]
                .find(e => e.offsetParent !== null);
            return el && el.innerText.includes(t);
        }""",
        arg=lab.read(rel).splitlines()[0],
    )
    return page


def type_at_end(page: Any, text: str) -> None:
    page.locator(".jp-FileEditor:visible .cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.type(text)


def audit_records(lab: Lab) -> list[dict[str, Any]]:
    status, body = lab.api("GET", "audit?limit=200")
    assert status == 200 and body["chain_ok"] is True, body
    return list(body["records"])


def test_editor_save_is_recorded(browser: Any, plain_lab: Lab) -> None:
    plain_lab.write("saved.py", "x = 1\n")
    page = open_in_editor(browser, plain_lab, "saved.py")
    try:
        type_at_end(page, "y = 2\n")
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        while True:
            saves = [
                r
                for r in audit_records(plain_lab)
                if r["action"] == "contents.save" and r["paths"] == ["saved.py"]
            ]
            if saves:
                break
            assert time.monotonic() < deadline, audit_records(plain_lab)
            time.sleep(0.2)
        on_disk = (plain_lab.root / "saved.py").read_bytes()
        assert b"y = 2" in on_disk
        assert saves[0]["sha256_after"] == {"saved.py": hashlib.sha256(on_disk).hexdigest()}
        assert saves[0]["sha256_before"] == {"saved.py": hashlib.sha256(b"x = 1\n").hexdigest()}
        assert "y = 2" not in plain_lab.read(".codeyard/audit.jsonl")
        screenshot(page, "saved")
    finally:
        page.context.close()


def test_patch_only_save_shows_the_reason(browser: Any, patch_only_lab: Lab) -> None:
    patch_only_lab.write("locked.py", "x = 1\n")
    page = open_in_editor(browser, patch_only_lab, "locked.py")
    try:
        type_at_end(page, "y = 2\n")
        page.keyboard.press("Control+s")
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(state="visible")
        page.wait_for_function(
            "(t) => document.querySelector('.jp-Dialog')?.innerText.includes(t)",
            arg=PATCH_ONLY_MESSAGE,
        )
        text = dialog.inner_text()
        assert PATCH_ONLY_MESSAGE in text
        assert "locked.py" in text  # JupyterLab's own title: "File Save Error for locked.py"
        screenshot(page, "patch-only-refused")
        assert patch_only_lab.read("locked.py") == "x = 1\n"
        assert not [r for r in audit_records(patch_only_lab) if r["action"].startswith("contents.")]
    finally:
        page.context.close()
