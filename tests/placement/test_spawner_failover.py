"""A real `PlacementSpawner` over `RegistryHostProvider` on the two TLS engines: drain, a
drained engine killed by its PID, failover with the files intact, the admin's view of the
move, and the stale container removed when the engine comes back.

The spawner runs its whole `start()`/`stop()` (placement, home helper, container create and
start, the wait for HTTP, the provider's `started`/`stopped` hooks) against the engines. No
Hub process is needed: the spawner gets a plain user object and a default `Hub()` for its
environment. The workspace "server" is busybox's httpd instead of Jupyter: the spawner's
`cmd` is a shell that ignores the Jupyter arguments appended to it, and its readiness check
accepts any HTTP answer below 500 (httpd's 404). The image is busybox-static (as in
`test_shared_storage.py`) plus the `/bin/sh`-style links the home helper's script calls.

Both engines run on this machine, so a storage root on the local disk is shared storage for
both (as NFS would be across machines).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from types import SimpleNamespace

import pytest
from jupyterhub.objects import Hub
from test_shared_storage import CACHE, _busybox_rootfs
from traitlets.config import Config

from codeyard.placement.health import HealthMonitor
from codeyard.placement.provider import RegistryHostProvider
from codeyard.spawner import PlacementSpawner, clients

IMAGE = "codeyard-test/busybox-sh:1"
APPLETS = ("sh", "cat", "chown", "mkdir", "mv", "rm", "httpd")
USER = "failover-ann"
SERVE = "exec /bin/busybox httpd -f -p 8888 -h /www"


def _image_tar() -> bytes:
    _busybox_rootfs()  # downloads busybox-static into CACHE once
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(CACHE / "bin" / "busybox", arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for folder in ("tmp", "www"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(info)
    return buf.getvalue()


@pytest.fixture(scope="module")
def busybox_sh(engines):  # type: ignore[no-untyped-def]
    try:
        rootfs = _image_tar()
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"busybox-static unavailable: {e}")
    repo, tag = IMAGE.split(":")
    for engine in engines:
        with engine.client(60) as c:
            c.api.import_image_from_data(rootfs, repository=repo, tag=tag)
    return IMAGE


def _running(engine, name: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """`docker ps --filter name=...` on `engine` (running containers only)."""
    with engine.client(30) as c:
        return [x for x in c.api.containers(filters={"name": name}) if f"/{name}" in x["Names"]]


def _containers(engine, name: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """`docker ps -a --filter name=...` on `engine` (stopped ones too)."""
    with engine.client(30) as c:
        found = c.api.containers(all=True, filters={"name": name})
        return [x for x in found if f"/{name}" in x["Names"]]


def _sh(engine, container: str, script: str) -> str:  # type: ignore[no-untyped-def]
    with engine.client(30) as c:
        run = c.api.exec_create(container, ["/bin/sh", "-c", script])
        return c.api.exec_start(run["Id"]).decode()


def _remove_ours(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.client(30) as c:
        for x in c.api.containers(all=True, filters={"label": f"codeyard.user={USER}"}):
            c.api.remove_container(x["Id"], force=True)


async def _admin_page(service, path: str, token: str) -> str:  # type: ignore[no-untyped-def]
    from tornado.httpclient import AsyncHTTPClient

    resp = await AsyncHTTPClient().fetch(
        service.url + path, headers={"Authorization": f"token {token}"}, follow_redirects=False
    )
    return resp.body.decode()


@pytest.mark.asyncio
async def test_drained_host_dies_workspace_moves_admin_sees_it_and_stale_container_goes(  # type: ignore[no-untyped-def]
    engines, registry, db_url, busybox_sh, tmp_path, monkeypatch, api, service, hub_tokens
) -> None:
    first, second = engines
    shared = tmp_path / "nfs"
    shared.mkdir()
    for engine in engines:
        registry.add_server(
            {
                "name": engine.name,
                "endpoint": engine.endpoint,
                "credential": engine.client_bundle,
                "storage_root": str(shared),
                "storage_shared": True,
                "mem_capacity": 16384,
            }
        )
    registry.settings.failure_threshold = 2

    # A fresh provider cache: the spawner builds its RegistryHostProvider from this config.
    monkeypatch.setattr(PlacementSpawner, "_providers", {})
    config = Config()
    config.RegistryHostProvider.db_url = db_url
    config.RegistryHostProvider.runtime_dir = str(tmp_path / "tls")
    spawner = PlacementSpawner(
        config=config,
        user=SimpleNamespace(name=USER, url=f"/user/{USER}/", settings={}),
        hub=Hub(),
        host_provider_class=RegistryHostProvider,
        allowed_images={"busybox": busybox_sh},
        image=busybox_sh,
        profiles={"tiny": {"display_name": "Tiny", "cpu": 0.5, "mem": "512M"}},
        cmd=["/bin/sh", "-c", SERVE, "workspace"],  # Jupyter's arguments land in $1...
        start_timeout=60,
    )
    monitor = HealthMonitor(registry, interval=0.2, timeout=2)
    killed = False
    try:
        ip, _port = await spawner.start()
        state = spawner.get_state()
        assert state["host"] == first.name and ip == first.ip
        name = spawner.object_name
        old_id = state["object_id"]
        assert [c["Id"] for c in _running(first, name)] == [old_id]
        assert registry.get_placement(USER)["state"] == "running"  # the started() hook
        # the profile's memory was reserved by the first placement already
        assert registry.get_server(first.name)["load"]["mem_reserved"] == 512
        _sh(first, name, "echo 'written on the first engine' > /home/jovyan/work/notes.txt")

        # Drain: the running workspace stays where it is.
        status, _ = await api("POST", f"servers/{first.name}/drain")
        assert status == 200
        assert await spawner.poll() is None
        assert _running(first, name)
        placement = registry.get_placement(USER)
        assert (placement["server"], placement["state"]) == (first.name, "running")

        await spawner.stop()
        assert not _running(first, name)
        assert registry.get_placement(USER)["state"] == "stopped"  # the stopped() hook

        # The drained engine dies: down wins over draining, and the drain intent is kept.
        first.kill()
        killed = True
        for _ in range(2):
            await monitor.check_once()
        _, server = await api("GET", f"servers/{first.name}")
        assert (server["state"], server["drain_requested"]) == ("down", True)

        # The next start moves the workspace, files intact (shared storage).
        ip, _port = await spawner.start()
        state = spawner.get_state()
        assert state["host"] == second.name and ip == second.ip
        assert [c["Id"] for c in _running(second, name)] == [state["object_id"]]
        out = _sh(second, name, "cat /home/jovyan/work/notes.txt")
        assert out.strip() == "written on the first engine"

        # The admin view shows the move: the API and the placements page.
        _, [view] = await api("GET", f"workspaces?user={USER}")
        assert (view["server"], view["state"]) == (second.name, "running")
        assert f"moved from {first.name} (down)" in view["reason"]
        page = await _admin_page(service, f"workspaces?user={USER}", hub_tokens["admin"])
        assert f'data-user="{USER}" data-server="{second.name}"' in page
        assert f"moved from {first.name} (down)" in page

        # The dead engine comes back, still holding the old container: the monitor brings
        # the host back draining (the admin's intent) and removes the stale container.
        first.stop()
        first.start()
        killed = False
        assert [c["Id"] for c in _containers(first, name)] == [old_id]
        sid = registry.get_server(first.name)["id"]
        assert (await monitor.check_once())[sid] == "draining"
        assert _containers(first, name) == []
        assert [c["Id"] for c in _running(second, name)] == [state["object_id"]]
        _, [view] = await api("GET", f"workspaces?user={USER}")
        assert view["server"] == second.name
        assert view["reason"].startswith(f"removed stale container {name}")
        assert f"now runs on {second.name}" in view["reason"]
        page = await _admin_page(service, f"workspaces?user={USER}", hub_tokens["admin"])
        assert f"removed stale container {name}" in page
        status, undrained = await api("POST", f"servers/{first.name}/undrain")
        assert (status, undrained["state"]) == (200, "active")
        await spawner.stop()
    finally:
        if killed:
            first.stop()
            first.start()
        for engine in engines:
            _remove_ours(engine)
        await monitor.stop()
        for provider in PlacementSpawner._providers.values():
            provider.close()
        clients.close_all()
