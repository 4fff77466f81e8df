"""Fixtures for the Hub end-to-end tests: a real JupyterHub process and the real dockerd.

Run on their own: `.venv/bin/pytest tests/hub`. They need root (or docker access), the
docker bridge at 172.17.0.1, and npm; the image is built by `images/bin/build-images.sh`
(cached by content hash, so only the first run is slow).

Fixtures
--------
image (session)
    Tag of the single-user image; starts dockerd and builds the image if needed.
proxy_command (session)
    Path of configurable-http-proxy, installed by `hub_config/bin/install-proxy.sh`.
git_server (module)
    `GitServer` with a bare repository `project.git` (README.md, src/app.py; branch
    `feature` adds FEATURE.md) served by `git daemon` on the docker bridge, so workspace
    containers clone it over the network. `.url(name)` gives `git://172.17.0.1:<port>/name`.
hubs (module)
    `HubLauncher`: `hubs.running(name, **options)` starts a project Hub in a fresh state
    folder (or in a `Path` the caller made) with the image and proxy above; `options` are
    `HubProcess` fields (`extra_env`, `site_config`, `port`, `admin_scopes`, ...), the only
    part a module's Hub varies. On the way out it is stopped and this module's users'
    containers and homes are removed. Every module's own Hub fixture is one
    `with hubs.running(...)` block.
hub (module)
    A started `HubProcess` with its own state folder, on free loopback ports, with an
    admin service token (`hub.api(...)`) and a limit of `WORKSPACE_LIMIT` workspaces per
    user. At the end it is stopped and every container
    labelled with one of this module's users is removed.
test_vllm (module)
    URL of the vLLM that `hub_config/vllm/with-vllm.sh` started for this run; fails (never
    skips) when the tests were not started under it.
model_hub (module)
    Like `hub`, without the workspace limit, with the gateway answering through `test_vllm`
    and short explanations (`explain_max_tokens=60`).
users (module)
    Unique user names for this run, `users.alice` / `users.bob`, so runs never collide.
docker_client (session)
    A plain `docker.APIClient` for reading what really runs (inspect, exec, logs).
machine (module)
    A namespace machine (ENVIRONMENT.md §10) with the image: the run's shared one when
    `with-machines.sh` started one, else one of the module's own. Skips, saying why, where
    namespace machines cannot run. test_remote_machine.py has its own (it pulls from the
    registry instead).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from support.hub import DOCKER_BRIDGE_IP, HubProcess, ensure_images, ensure_proxy, model_env
from support.machines import Machine, can_run_machines, machines
from support.processes import free_port

WORKSPACE_LIMIT = 4

# For Hubs started through up.sh with this process's environment (test_up.py): the model the
# other Hubs of these tests use, and a gateway port picked on loopback (the docker bridge may
# not exist yet).
os.environ.update(model_env())
os.environ.setdefault("CODEYARD_LLM_PORT", str(free_port()))


@pytest.fixture(scope="session")
def image() -> str:
    """The single-user image: `CODEYARD_TEST_IMAGE` (a tag already built, to test Hub-side
    changes against a known image without a rebuild), else the tree's, built if needed."""
    return os.environ.get("CODEYARD_TEST_IMAGE") or ensure_images()


@pytest.fixture(scope="session")
def proxy_command() -> str:
    return ensure_proxy()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.APIClient]:
    client = docker.APIClient(base_url="unix:///var/run/docker.sock", version="1.41")
    yield client
    client.close()


@dataclass
class GitServer:
    root: Path
    port: int

    def url(self, name: str) -> str:
        return f"git://{DOCKER_BRIDGE_IP}:{self.port}/{name}"


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[GitServer]:
    # `image` first: it starts dockerd, which creates the bridge address we listen on.
    base = tmp_path_factory.mktemp("git")
    work = base / "work"
    (work / "src").mkdir(parents=True)
    (work / "README.md").write_text("# Project\n")
    (work / "src" / "app.py").write_text("print('hello')\n")
    _git("init", "-q", "-b", "main", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "initial", cwd=work)
    _git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "FEATURE.md").write_text("feature branch\n")
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "feature", cwd=work)
    root = base / "srv"
    root.mkdir()
    _git("clone", "-q", "--bare", str(work), str(root / "project.git"), cwd=base)
    port = free_port(DOCKER_BRIDGE_IP)
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            "--reuseaddr",
            f"--base-path={root}",
            f"--listen={DOCKER_BRIDGE_IP}",
            f"--port={port}",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["git", "ls-remote", f"git://{DOCKER_BRIDGE_IP}:{port}/project.git"],
                capture_output=True,
            )
            if probe.returncode == 0:
                break
            time.sleep(0.2)
        yield GitServer(root, port)
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Users:
    alice: str
    bob: str

    def all(self) -> list[str]:
        return [self.alice, self.bob]


@pytest.fixture(scope="module")
def users() -> Users:
    tag = secrets.token_hex(3)
    return Users(alice=f"alice{tag}", bob=f"bob{tag}")


@contextmanager
def running_hub(
    state: Path,
    image: str,
    proxy_command: str,
    users: Users,
    docker_client: docker.APIClient,
    **options: Any,
) -> Iterator[HubProcess]:
    """Start a HubProcess; on the way out stop it and remove its users' containers and homes."""
    proc = HubProcess(state_dir=state, image=image, proxy_command=proxy_command, **options)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        for name in users.all():
            for c in docker_client.containers(all=True, filters={"label": f"codeyard.user={name}"}):
                docker_client.remove_container(c["Id"], force=True)
        # Homes are owned by the workspace uid; remove them so tmp cleanup can.
        shutil.rmtree(state / "homes", ignore_errors=True)


@dataclass
class HubLauncher:
    """Starts a module's project Hubs. Modules differ only in the options they start a Hub
    with, so the image, proxy, users and cleanup are bound here once."""

    tmp_path_factory: pytest.TempPathFactory
    image: str
    proxy_command: str
    users: Users
    docker_client: docker.APIClient

    def running(self, state: str | Path, **options: Any) -> AbstractContextManager[HubProcess]:
        """A Hub in a fresh state folder named after `state`, or in the folder `state` when
        the caller made it (its own cleanup needs the path even if the Hub never starts);
        `options` are `HubProcess` fields. Stopped, with the users' containers and homes
        removed, on the way out."""
        folder = state if isinstance(state, Path) else self.tmp_path_factory.mktemp(state)
        return running_hub(
            folder, self.image, self.proxy_command, self.users, self.docker_client, **options
        )


@pytest.fixture(scope="module")
def hubs(
    tmp_path_factory: pytest.TempPathFactory,
    image: str,
    proxy_command: str,
    users: Users,
    docker_client: docker.APIClient,
) -> HubLauncher:
    return HubLauncher(tmp_path_factory, image, proxy_command, users, docker_client)


@pytest.fixture(scope="module")
def hub(hubs: HubLauncher) -> Iterator[HubProcess]:
    limit = {"CODEYARD_WORKSPACES_PER_USER": str(WORKSPACE_LIMIT)}
    with hubs.running("hubstate", extra_env=limit) as proc:
        yield proc


@pytest.fixture(scope="module")
def test_vllm() -> str:
    url = os.environ.get("CODEYARD_TEST_VLLM_URL")
    if not url or not os.environ.get("CODEYARD_TEST_VLLM_KEY_FILE"):
        pytest.fail(
            "CODEYARD_TEST_VLLM_URL / CODEYARD_TEST_VLLM_KEY_FILE are not set: run the Hub "
            "tests under one vLLM, `hub_config/vllm/with-vllm.sh .venv/bin/pytest tests/hub` "
            "(`make test` does)."
        )
    return url


@pytest.fixture(scope="module")
def model_hub(test_vllm: str, hubs: HubLauncher) -> Iterator[HubProcess]:
    """`hub` as `make up` configures it, answering through the test vLLM; explanations are
    kept short because the model runs on a shared CPU."""
    short = 'c.Spawner.args = ["--CodeyardLLM.explain_max_tokens=60"]'
    with hubs.running("hubstate-model", site_config=short) as proc:
        yield proc


@pytest.fixture(scope="module")
def machine(image: str) -> Iterator[Machine]:
    """The run's machine (or one of our own), with the image."""
    if why := can_run_machines():
        pytest.skip(f"namespace machines unavailable: {why}")
    with machines(1) as running:
        m = running[0]
        seconds = m.load_image(image)
        print(f"\nimage onto {m.name}: {seconds:.1f}s")
        yield m
