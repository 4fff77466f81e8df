"""A real `PlacementSpawner` over `RegistryHostProvider` on the two TLS engines: drain, failover.

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

from codeyard.placement.connect import HostClient
from codeyard.placement.health import HealthMonitor
from codeyard.placement.models import ServerState
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
        with HostClient(engine.endpoint, "tls", engine.client_bundle, timeout=60) as c:
            c.api.import_image_from_data(rootfs, repository=repo, tag=tag)
    return IMAGE


def _running(engine, name: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """`docker ps --filter name=...` on `engine` (running containers only)."""
    with HostClient(engine.endpoint, "tls", engine.client_bundle, timeout=30) as c:
        return [x for x in c.api.containers(filters={"name": name}) if f"/{name}" in x["Names"]]


def _sh(engine, container: str, script: str) -> str:  # type: ignore[no-untyped-def]
    with HostClient(engine.endpoint, "tls", engine.client_bundle, timeout=30) as c:
        run = c.api.exec_create(container, ["/bin/sh", "-c", script])
        return c.api.exec_start(run["Id"]).decode()


def _remove_ours(engine) -> None:  # type: ignore[no-untyped-def]
    with HostClient(engine.endpoint, "tls", engine.client_bundle, timeout=30) as c:
        for x in c.api.containers(all=True, filters={"label": f"codeyard.user={USER}"}):
            c.api.remove_container(x["Id"], force=True)


@pytest.mark.asyncio
async def test_spawner_stays_on_drained_host_and_moves_after_its_engine_dies(  # type: ignore[no-untyped-def]
    engines, registry, db_url, busybox_sh, tmp_path, monkeypatch
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
        assert [c["Id"] for c in _running(first, name)] == [state["object_id"]]
        assert registry.get_placement(USER)["state"] == "running"  # the started() hook
        _sh(first, name, "echo 'written on the first engine' > /home/jovyan/work/notes.txt")

        # Drain: the running workspace stays where it is.
        registry.set_state(first.name, ServerState.draining)
        assert await spawner.poll() is None
        assert _running(first, name)
        placement = registry.get_placement(USER)
        assert (placement["server"], placement["state"]) == (first.name, "running")

        await spawner.stop()
        assert not _running(first, name)
        assert registry.get_placement(USER)["state"] == "stopped"  # the stopped() hook

        # The admin undrains it (the monitor never marks a draining host down); then the
        # engine dies, the monitor marks it down, and the next start moves the workspace.
        registry.set_state(first.name, ServerState.active)
        first.kill()
        killed = True
        for _ in range(2):
            await monitor.check_once()
        assert registry.get_server(first.name)["state"] == "down"

        ip, _port = await spawner.start()
        state = spawner.get_state()
        assert state["host"] == second.name and ip == second.ip
        assert [c["Id"] for c in _running(second, name)] == [state["object_id"]]
        out = _sh(second, name, "cat /home/jovyan/work/notes.txt")
        assert out.strip() == "written on the first engine"
        placement = registry.get_placement(USER)
        assert (placement["server"], placement["state"]) == (second.name, "running")
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
