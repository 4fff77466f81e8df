"""Failover with real containers: a workspace's files survive its engine's death (shared storage).

Both test engines run on this machine, so a host folder bind-mounted by either engine is
genuinely shared storage (as NFS would be across machines). The image is a one-binary
busybox (Debian's busybox-static, unpacked with `apt-get download` + `dpkg-deb -x`).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from placement_engines import fake_spawner

from codeyard.placement.health import HealthMonitor
from codeyard.placement.provider import RegistryHostProvider
from codeyard.spawner.clients import make_client

CACHE = (
    Path(os.environ.get("CODEYARD_CACHE", Path.home() / ".cache" / "codeyard")) / "busybox-static"
)
IMAGE = "codeyard-test/busybox:1"


def _busybox_rootfs() -> bytes:
    binary = CACHE / "bin" / "busybox"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                ["apt-get", "download", "busybox-static"], cwd=tmp, check=True, capture_output=True
            )
            for deb in Path(tmp).glob("*.deb"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(CACHE)], check=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(binary, arcname="bin/busybox")
    return buf.getvalue()


@pytest.fixture(scope="module")
def busybox(engines):  # type: ignore[no-untyped-def]
    try:
        rootfs = _busybox_rootfs()
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"busybox-static unavailable: {e}")

    for engine in engines:
        with engine.client(60) as c:
            repo, tag = IMAGE.split(":")
            c.api.import_image_from_data(rootfs, repository=repo, tag=tag)
    return IMAGE


def _run(host, command: str, home: Path) -> str:  # type: ignore[no-untyped-def]
    client = make_client(host)
    container = client.create_container(
        IMAGE,
        ["/bin/busybox", "sh", "-c", command],
        host_config=client.create_host_config(
            binds={str(home): {"bind": "/home/work", "mode": "rw"}}, network_mode="none"
        ),
    )
    try:
        client.start(container)
        assert client.wait(container, timeout=60)["StatusCode"] == 0
        return client.logs(container).decode()
    finally:
        client.remove_container(container, force=True)


@pytest.mark.asyncio
async def test_files_survive_failover_on_shared_storage(
    api, engines, registry, busybox, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "nfs"
    (shared / "alice").mkdir(parents=True)
    for engine in engines:
        status, _ = await api(
            "POST",
            "servers",
            body={
                "name": engine.name,
                "endpoint": engine.endpoint,
                "credential": engine.client_bundle,
                "storage_root": str(shared),
                "storage_shared": True,
            },
        )
        assert status == 201
    provider = RegistryHostProvider()
    provider.registry = registry
    registry.settings.failure_threshold = 2
    alice = fake_spawner("alice")

    first = await provider.choose(alice)
    home = Path(first.storage_root) / "alice"
    _run(first, "echo 'written on the first engine' > /home/work/notes.txt", home)
    await provider.started(alice)

    victim = next(e for e in engines if e.name == first.name)
    monitor = HealthMonitor(registry, interval=0.2, timeout=2)
    try:
        victim.kill()
        for _ in range(2):
            await monitor.check_once()
        assert registry.get_server(victim.name)["state"] == "down"
        await provider.stopped(alice)
        second = await provider.choose(alice)
        assert second.name != first.name
        out = _run(second, "cat /home/work/notes.txt", Path(second.storage_root) / "alice")
        assert out.strip() == "written on the first engine"
        _, [placement] = await api("GET", "workspaces?user=alice")
        assert placement["server"] == second.name
    finally:
        victim.stop()
        victim.start()
        await monitor.stop()
