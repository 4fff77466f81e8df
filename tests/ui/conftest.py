"""Fixtures for the browser tests: a real `jupyter lab` with the Codeyard extension, the real
model stack behind it, and Debian's Chromium driven by Python Playwright.

Run this suite in its own pytest process (`pytest tests/ui`). Everything listens on 127.0.0.1.
The browser is always `/usr/bin/chromium` (`apt-get install -y chromium`); no tool may
download one. Screenshots go to `.artifacts/ui/` (gitignored) so a person can look at them.

Fixtures
--------
labextension_dir (session)
    The prebuilt bundle (`server_extension/codeyard/server_extension/labextension`). Built
    with `jlpm build:prod` when missing; fails with the build log if that fails.
model_stack (session)
    `(gateway_url, user_token)`: vLLM with SmolLM2 (hub_config/vllm/serve.sh) and a JupyterHub
    running the `codeyard-llm` gateway service, started through tests/support/llm_stack.py.
    Set CODEYARD_TEST_VLLM_URL / CODEYARD_TEST_VLLM_KEY_FILE to reuse a running vLLM.
lab (session)
    `Lab`: a `jupyter lab` subprocess on a free port with a random token, its workspace folder
    (`lab.root`), `lab.url(path)`, `lab.api(method, endpoint, body=None)` for calling
    `codeyard/api/*` directly, and `lab.read(rel)` / `lab.write(rel, text)`.
lab_without_model
    A second `Lab` whose gateway URL is a closed loopback port (the gateway-down case).
browser (session)
    A Playwright Chromium `Browser` launched from /usr/bin/chromium with the project's flags.
page
    A fresh browser page on its own JupyterLab workspace (`page.workspace`), already
    loaded and logged in with the token. Console errors are collected in
    `page.console_errors`, HTTP answers >= 400 in `page.failed_requests`.
shot
    `shot(page, name)`: save a full-page screenshot to `.artifacts/ui/<test>-<name>.png`.
panel
    `CodeyardPanel` helper bound to `page`: `open()`, `open_file(rel)`, `select_lines(a, b)`,
    locators for the panel's parts, and `status()`.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from support.chromium import HOST_NETWORK_NOISE, chromium
from support.llm_stack import start_hub, start_vllm
from support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "server_extension" / "codeyard" / "server_extension" / "labextension"
ARTIFACTS = REPO / ".artifacts" / "ui"
EXT_NAME = "codeyard-labextension"


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def labextension_dir() -> Path:
    if not (BUNDLE / "package.json").exists():
        jlpm = Path(sys.executable).with_name("jlpm")
        cwd = REPO / "labextension"
        for args in (["install"], ["build:prod"]):
            done = subprocess.run(
                [str(jlpm), *args], cwd=cwd, capture_output=True, text=True, timeout=600
            )
            if done.returncode != 0:
                pytest.fail(f"jlpm {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr}")
    return BUNDLE


@pytest.fixture(scope="session")
def model_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    vllm = start_vllm(tmp_path_factory.mktemp("vllm"))
    try:
        hub = start_hub(tmp_path_factory.mktemp("hub"), vllm, {"codeyard-llm": []})
    except Exception:
        vllm.stop()
        raise
    try:
        token = hub.user_token("ui-tester", ["custom:codeyard-llm"])
        yield hub.gateways["codeyard-llm"].url, token
    finally:
        hub.stop()
        vllm.stop()


@dataclass
class Lab:
    base: str
    token: str
    root: Path
    proc: subprocess.Popen[Any]
    log: Path

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, method: str, endpoint: str, body: Any = None) -> tuple[int, Any]:
        r = requests.request(
            method,
            f"{self.base}/codeyard/api/{endpoint}",
            headers={"Authorization": f"token {self.token}"},
            data=None if body is None else json.dumps(body),
            timeout=300,
        )
        return r.status_code, (r.json() if r.content else None)

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def write(self, rel: str, text: str) -> None:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def start_lab(base_dir: Path, labextension_dir: Path, gateway_url: str, user_token: str) -> Lab:
    """A `jupyter lab` subprocess with the fresh bundle, its model calls sent to `gateway_url`."""
    root = base_dir / "workspace"
    root.mkdir()
    # The freshly built bundle comes first on JUPYTER_PATH, ahead of any installed copy.
    data = base_dir / "jupyter-data"
    (data / "labextensions").mkdir(parents=True)
    (data / "labextensions" / EXT_NAME).symlink_to(labextension_dir, target_is_directory=True)
    # Short answers keep a CPU-only model quick enough for a browser test.
    (base_dir / "config").mkdir()
    (base_dir / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"CodeyardLLM": {"explain_max_tokens": 160, "rewrite_max_tokens": 200}})
    )
    # No news toast over the panel in screenshots.
    notification = base_dir / "settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port = free_port()
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_PATH": f"{data}{os.pathsep}{os.environ.get('JUPYTER_PATH', '')}".rstrip(
            os.pathsep
        ),
        "JUPYTER_CONFIG_DIR": str(base_dir / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(base_dir / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base_dir / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(base_dir / "runtime"),
        "CODEYARD_LLM_URL": gateway_url,
        "JUPYTERHUB_API_TOKEN": user_token,
    }
    log = base_dir / "lab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.jpserver_extensions={'codeyard.server_extension': True}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Lab(f"http://127.0.0.1:{port}", token, root, proc, log)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(running.url("api/status"), timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"jupyter lab did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)
    return running


@pytest.fixture(scope="session")
def lab(
    labextension_dir: Path,
    model_stack: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:
    gateway_url, user_token = model_stack
    running = start_lab(tmp_path_factory.mktemp("lab"), labextension_dir, gateway_url, user_token)
    yield running
    _stop(running.proc)


@pytest.fixture
def lab_without_model(
    labextension_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    """A second `jupyter lab` whose gateway URL is a closed loopback port: every model call
    and status check meets a real refused connection."""
    closed = f"http://127.0.0.1:{free_port()}"
    running = start_lab(tmp_path_factory.mktemp("lab-down"), labextension_dir, closed, "t")
    yield running
    _stop(running.proc)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _note_console(pg: Any, message: Any) -> None:
    if message.type == "error" and not any(n in message.text for n in HOST_NETWORK_NOISE):
        pg.console_errors.append(message.text)


@pytest.fixture
def page(browser: Any, lab: Lab, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.console_errors = []  # type: ignore[attr-defined]
    pg.failed_requests = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: _note_console(pg, m))
    pg.on(
        "response",
        lambda r: (
            pg.failed_requests.append(f"{r.status} {r.request.method} {r.url.split('?')[0]}")  # type: ignore[attr-defined]
            if r.status >= 400
            else None
        ),
    )
    workspace = f"ui-{request.node.name}-{secrets.token_hex(3)}"
    pg.workspace = workspace  # type: ignore[attr-defined]
    pg.goto(lab.url(f"lab/workspaces/{workspace}?reset"))
    pg.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=60_000)
    pg.wait_for_selector(".jp-SideBar.jp-mod-right")
    yield pg
    context.close()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Any:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(pg: Any, name: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        pg.screenshot(path=str(path))
        return path

    return take


class CodeyardPanel:
    """What a user does with the panel, as locators and small actions."""

    def __init__(self, page: Any, lab: Lab) -> None:
        self.page = page
        self.lab = lab
        self.root = page.locator("#codeyard-ai-panel")

    def open(self) -> None:
        tab = self.page.locator('.jp-SideBar.jp-mod-right li[data-id="codeyard-ai-panel"]')
        tab.wait_for()
        if not self.root.is_visible():
            tab.click()
        self.root.wait_for(state="visible")

    def open_file(self, rel: str) -> Any:
        self.page.goto(self.lab.url(f"lab/workspaces/{self.page.workspace}/tree/{rel}"))
        self.page.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=60_000)
        editor = self.page.locator(".jp-FileEditor:visible .cm-content")
        editor.wait_for(state="visible")
        # The document loads after the editor appears; wait for its text, not an empty view.
        expected = (self.lab.root / rel).read_text()
        self.wait_editor_text(expected)
        return editor

    def wait_editor_text(self, text: str, timeout: float = 30_000) -> None:
        """Wait until the open file editor shows `text` (whitespace-insensitive)."""
        self.page.wait_for_function(
            """(t) => {
                const el = [...document.querySelectorAll('.jp-FileEditor .cm-content')]
                    .find(e => e.offsetParent !== null);
                return el && el.innerText.replace(/\\s+/g, '') === t.replace(/\\s+/g, '');
            }""",
            arg=text,
            timeout=timeout,
        )

    def select_lines(self, first: int, last: int) -> None:
        """Put the cursor at the start of line `first` and extend to the end of `last`."""
        lines = self.page.locator(".jp-FileEditor:visible .cm-line")
        lines.nth(first - 1).click(position={"x": 1, "y": 5})
        self.page.keyboard.press("Home")
        for _ in range(last - first):
            self.page.keyboard.press("Shift+ArrowDown")
        self.page.keyboard.press("Shift+End")
        self.wait_context(f"lines {first}\u2013{last}")

    def wait_context(self, text: str) -> None:
        """Wait until the panel's context box (file, cell, selection) mentions `text`."""
        self.page.wait_for_function(
            "(t) => document.querySelector('#codeyard-ai-panel .cy-context')"
            ".textContent.includes(t)",
            arg=text,
        )

    def status(self) -> str:
        return str(self.root.locator(".cy-status").inner_text())

    def wait_status(self, *needles: str, timeout: float = 180_000) -> str:
        """Wait until the status line contains any of `needles`; return it."""
        self.page.wait_for_function(
            """([needles]) => {
                const s = document.querySelector('#codeyard-ai-panel .cy-status');
                return s && needles.some(n => s.textContent.includes(n));
            }""",
            arg=[list(needles)],
            timeout=timeout,
        )
        return self.status()

    def __getattr__(self, name: str) -> Any:
        selectors = {
            "context": ".cy-context",
            "question": ".cy-question",
            "explain_button": ".cy-explain",
            "stop_button": ".cy-stop",
            "explain_output": ".cy-explain-output",
            "instruction": ".cy-instruction",
            "rewrite_button": ".cy-rewrite",
            "review": ".cy-review",
            "diff": ".cy-diff",
            "apply_button": ".cy-apply",
            "discard_button": ".cy-discard",
            "conflict": ".cy-conflict",
            "history": ".cy-history-list",
            "history_status": ".cy-history-status",
        }
        if name in selectors:
            return self.root.locator(selectors[name])
        raise AttributeError(name)


@pytest.fixture
def panel(page: Any, lab: Lab) -> CodeyardPanel:
    return CodeyardPanel(page, lab)
