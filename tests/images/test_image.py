"""The single-user image: starts jupyter server, loads Codeyard, runs as non-root.

The fixture runs `images/bin/build-images.sh` itself (it starts dockerd when needed and
skips the build when the image for the current inputs exists), so a fresh engine with a
stale cache still gets its image. A failed build fails these tests, never skips them.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import requests

DOCKER = "/usr/bin/docker"
REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 360  # jupyter-ai imports take 10-15 s idle, minutes under heavy load.
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def docker(*args: str, check: bool = True, timeout: float = 300) -> str:
    proc = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """Build (or find, by input hash) the single-user image; the script prints the tag last."""
    proc = subprocess.run(
        [str(REPO / "images" / "bin" / "build-images.sh")],
        stdout=subprocess.PIPE, text=True, timeout=3600, check=False,
    )  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"images/bin/build-images.sh failed ({proc.returncode}); its log is above")
    tag = proc.stdout.strip().splitlines()[-1]
    docker("image", "inspect", tag)
    return tag


@pytest.fixture(scope="module")
def server(image: str):
    """A container running `jupyter server` with a random token, published on loopback."""
    token = secrets.token_hex(16)
    name = f"codeyard-test-image-{secrets.token_hex(4)}"
    docker(
        "run", "-d", "--name", name, "--label", "org.codeyard.test=image",
        "-p", "127.0.0.1::8888", image,
        "jupyter", "server", f"--ServerApp.token={token}", "--ip=0.0.0.0", "--port=8888",
    )  # fmt: skip
    try:
        port = docker("port", name, "8888/tcp").split()[0].rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if requests.get(f"{url}/api/status", timeout=2).status_code in (200, 403):
                    break
            except requests.ConnectionError:
                pass
            running = docker("inspect", "-f", "{{.State.Running}}", name).strip()
            if running != "true" or time.monotonic() > deadline:
                logs = subprocess.run(
                    [DOCKER, "logs", "--tail", "60", name], capture_output=True, text=True
                )
                pytest.fail(
                    f"jupyter server in {image} did not answer (running={running}):\n"
                    f"{logs.stdout}{logs.stderr}"
                )
            time.sleep(0.3)
        yield {"name": name, "url": url, "token": token}
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True)


def test_api_status_needs_and_accepts_the_token(server):
    url = f"{server['url']}/api/status"
    ok = requests.get(url, headers={"Authorization": f"token {server['token']}"}, timeout=10)
    assert ok.status_code == 200
    assert "started" in ok.json()
    assert requests.get(url, timeout=10).status_code == 403


def test_codeyard_extension_is_enabled_and_imports(server):
    out = docker("exec", server["name"], "sh", "-c", "jupyter server extension list 2>&1")
    out = ANSI.sub("", out)
    assert re.search(r"codeyard\.server_extension\s+enabled", out), out
    assert re.search(r"codeyard\.server_extension\s+OK", out), out
    docker("exec", server["name"], "python", "-c", "import codeyard.server_extension")


def test_runs_as_non_root(server, image):
    assert docker("exec", server["name"], "id", "-u").strip() == "1000"
    assert docker("exec", server["name"], "sh", "-c", "echo $HOME").strip() == "/home/jovyan"
    # Every process of the container, as the host sees them.
    rows = docker("top", server["name"], "-o", "pid,uid,args").splitlines()[1:]
    assert rows, "docker top listed no processes"
    for row in rows:
        _pid, uid, args = row.split(None, 2)
        assert uid != "0", f"process runs as root: {args}"
    assert any("jupyter" in row for row in rows), rows


def test_tools_in_the_image(image):
    out = docker(
        "run", "--rm", image, "sh", "-c",
        "jupyterhub-singleuser --help >/dev/null && git --version && tini --version"
        " && python -c 'import jupyterhub, jupyterlab; print(jupyterhub.__version__)'",
    )  # fmt: skip
    assert "git version" in out
    assert out.strip().splitlines()[-1] == "5.5.4", out


def test_lab_does_not_phone_home(server):
    """No news feed and no update check: on-prem workspaces make no requests to jupyter.org."""
    auth = {"Authorization": f"token {server['token']}"}
    page = requests.get(f"{server['url']}/lab", headers=auth, timeout=30)
    assert page.status_code == 200
    assert re.search(r'"news":\s*\{"disabled":\s*true\}', page.text), "LabApp.news_url is set"
    setting = requests.get(
        f"{server['url']}/lab/api/settings/@jupyterlab/apputils-extension:notification",
        headers=auth,
        timeout=30,
    ).json()
    defaults = {k: v.get("default") for k, v in setting["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false", defaults
    assert defaults["checkForUpdates"] is False, defaults


def test_jupyter_ai_heavy_extensions_load_on_first_use(server):
    """Jupyternaut, litellm, MCP and ACP are not loaded at start; the first Jupyternaut
    request loads them (307 to itself), after which the real handlers and MCP are there."""
    auth = {"Authorization": f"token {server['token']}"}
    out = ANSI.sub(
        "", docker("exec", server["name"], "sh", "-c", "jupyter server extension list 2>&1")
    )
    assert re.search(r"codeyard\.jupyter_ai_on_demand\s+enabled", out), out
    assert re.search(r"codeyard\.jupyter_ai_on_demand\s+OK", out), out

    def mcp_listening() -> bool:
        rows = docker("exec", server["name"], "cat", "/proc/net/tcp").splitlines()[1:]
        return any(":0BB9" in r.split()[1] and r.split()[3] == "0A" for r in rows if r.strip())

    probe = requests.get(f"{server['url']}/api/jupyternaut/get-example", headers=auth, timeout=30)
    assert probe.status_code == 200 and probe.json()["loaded"] is False, probe.text
    assert not mcp_listening()

    config_url = f"{server['url']}/api/jupyternaut/config"
    first = requests.get(config_url, headers=auth, timeout=STARTUP_TIMEOUT, allow_redirects=False)
    assert first.status_code == 307, first.text
    config = requests.get(config_url, headers=auth, timeout=60)
    assert config.status_code == 200, config.text
    assert "model_provider_id" in config.json(), config.text
    probe = requests.get(f"{server['url']}/api/jupyternaut/get-example", headers=auth, timeout=30)
    assert probe.status_code == 200 and "loaded" not in probe.json(), probe.text
    deadline = time.monotonic() + 60
    while not mcp_listening():
        assert time.monotonic() < deadline, "the MCP server did not start after loading"
        time.sleep(0.5)
