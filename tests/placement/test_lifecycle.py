"""Restarts and rotations: what survives a Hub/service restart and a key rotation."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests
from cryptography.fernet import Fernet
from placement_engines import fake_spawner

from codeyard.placement.__main__ import main as cli
from codeyard.placement.crypto import KEY_ENV, CredentialCipher
from codeyard.placement.database import open_db
from codeyard.placement.probe import probe
from codeyard.placement.provider import RegistryHostProvider
from codeyard.placement.registry import Registry
from codeyard.spawner.clients import make_client


@pytest.mark.asyncio
async def test_placements_survive_a_restart(registry, engines, db_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for e in engines:
        registry.add_server({"name": e.name, "endpoint": e.endpoint, "credential": e.client_bundle})
    before = RegistryHostProvider(runtime_dir=str(tmp_path / "a"))
    before.registry = registry
    placed = {u: (await before.choose(fake_spawner(u))).name for u in ("ann", "ben", "cy", "dee")}
    for u in placed:
        await before.started(fake_spawner(u))

    # a new process: new registry on the same database, new provider, nothing in memory
    after = RegistryHostProvider(runtime_dir=str(tmp_path / "b"))
    after.registry = Registry(open_db(db_url), CredentialCipher(os.environ[KEY_ENV]))
    views = {p["user"]: p for p in after.registry.list_placements()}
    assert {u: v["server"] for u, v in views.items()} == placed
    assert all(v["state"] == "running" for v in views.values())
    for u, name in placed.items():
        host = after.get(name)  # what the spawner does after a Hub restart
        assert make_client(host).ping()
        assert (await after.choose(fake_spawner(u))).name == name  # sticky


@pytest.mark.asyncio
async def test_rotation_keeps_credentials_working_on_real_engines(  # type: ignore[no-untyped-def]
    api, engines, db_url, monkeypatch
) -> None:
    for e in engines:
        status, _ = await api(
            "POST",
            "servers",
            body={"name": e.name, "endpoint": e.endpoint, "credential": e.client_bundle},
        )
        assert status == 201
    old = os.environ[KEY_ENV]
    new = Fernet.generate_key().decode()
    monkeypatch.setenv(KEY_ENV, f"{new};{old}")
    assert cli(["--db-url", db_url, "rotate-keys"]) == 0
    monkeypatch.setenv(KEY_ENV, new)  # the old key is gone now
    rotated = Registry(open_db(db_url), CredentialCipher())
    for e in engines:
        assert probe(*rotated.connection(e.name), timeout=5)["ok"]


def test_serve_runs_as_the_hub_would_run_it(hub, hub_tokens, engines, db_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`python -m codeyard.placement serve` with the environment a managed service gets."""
    from support.processes import free_port

    port = free_port()
    prefix = "/services/codeyard-placement/"
    env = {
        **os.environ,
        KEY_ENV: Fernet.generate_key().decode(),
        "CODEYARD_PLACEMENT_DB_URL": db_url,
        **hub.placement_service_env(prefix, port),
    }
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeyard.placement", "serve",
         "--PlacementService.health_interval=0.5", "--PlacementService.failure_threshold=2"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}{prefix}api/"
    admin = {"Authorization": f"token {hub_tokens['admin']}"}
    try:
        for _ in range(100):
            try:
                requests.get(base + "servers", headers=admin, timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        dev = {"Authorization": f"token {hub_tokens['dev']}"}
        assert requests.get(base + "servers", headers=dev, timeout=5).status_code == 403
        e = engines[0]
        r = requests.post(
            base + "servers",
            json={"name": e.name, "endpoint": e.endpoint, "credential": e.client_bundle},
            headers=admin,
            timeout=5,
        )
        assert r.status_code == 201, r.text
        # the health monitor, not a `test` call, sets last_seen
        for _ in range(50):
            server = requests.get(base + f"servers/{e.name}", headers=admin, timeout=5).json()
            if server["last_seen"]:
                break
            time.sleep(0.1)
        assert server["last_seen"] and server["state"] == "active"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
