"""The image reaches every machine: a namespace machine (its own image store, its own network)
gets a workspace image by a pull from the site's registry, or, when it cannot reach the
registry, by a stream from the Hub's engine over its engine API, and the path taken is recorded
for the host page. Bad input fails fast with a clear message: a registry URL that leads
nowhere, refused credentials, a machine whose disk is full.

The registry is the run's (`support.registry`, Debian's docker-registry started by the
project's own `images/bin/ensure-registry.sh`, TLS and a login). Images are tiny (busybox
plus a file), built here with `docker import`, pushed with `images/bin/push-image.sh`.

The placement service pulls ahead of a spawn too (`codeyard.placement.image_pulls`): when a
host is registered through its API (the answer never waits for the pull) and when the image
changes (its start with a new tag); each outcome, failures included, is on the Servers page.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest
from support.machines import Machine, can_run_machines, machines, start_machines
from support.registry import REPO, RegistryServer, running_registry
from test_shared_storage import _busybox_rootfs
from tornado import web
from traitlets.config import Config

from codeyard.placement.hosts import DockerHost, DockerTLS
from codeyard.placement.models import ServerState
from codeyard.placement.registry import Registry
from codeyard.spawner.image_transfer import put_image_on_host

pytestmark = pytest.mark.skipif(bool(can_run_machines()), reason=str(can_run_machines()))

PUSH = REPO / "images" / "bin" / "push-image.sh"
log = logging.getLogger("test_image_distribution")


def _tiny_tar(extra_bytes: int = 0) -> bytes:
    """busybox (about 2 MB) plus `extra_bytes` of incompressible data."""
    base = _busybox_rootfs()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        with tarfile.open(fileobj=io.BytesIO(base)) as src:
            for member in src.getmembers():
                tar.addfile(member, src.extractfile(member))
        if extra_bytes:
            info = tarfile.TarInfo("data/blob")
            info.size = extra_bytes
            tar.addfile(info, io.BytesIO(os.urandom(extra_bytes)))
    return buf.getvalue()


def _import(tag: str, extra_bytes: int = 0) -> str:
    api = docker.APIClient(version="1.41")
    try:
        repo, version = tag.split(":")
        api.import_image_from_data(_tiny_tar(extra_bytes), repository=repo, tag=version)
    finally:
        api.close()
    return tag


def _push(server: RegistryServer, tag: str) -> str:
    out = subprocess.run(
        [str(PUSH), tag],
        env={**os.environ, **server.env()},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def registry_server() -> Iterator[RegistryServer]:
    with running_registry() as server:
        yield server


@pytest.fixture(scope="module")
def tags(registry_server: RegistryServer) -> Iterator[dict[str, str]]:
    """Tiny images on the Hub's engine: `pulled` and `streamed` are in the registry too."""
    try:
        _busybox_rootfs()
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"busybox-static unavailable: {e}")
    run = secrets.token_hex(3)
    made = {
        "pulled": _import(f"codeyard-test/tiny:{run}-a"),
        "streamed": _import(f"codeyard-test/tiny:{run}-b"),
        "big": _import(f"codeyard-test/tiny:{run}-big", extra_bytes=12 * 1024 * 1024),
    }
    for key in ("pulled", "streamed"):
        ref = _push(registry_server, made[key])
        assert ref == f"{registry_server.address}/{made[key]}"
    # Pushing again is skipped: the registry holds that tag already.
    again = subprocess.run(
        [str(PUSH), made["pulled"]],
        env={**os.environ, **registry_server.env()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "skipping the push" in again.stderr, again.stderr
    yield made
    api = docker.APIClient(version="1.41")
    for tag in made.values():
        for name in (tag, f"{registry_server.address}/{tag}"):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_image(name, force=True)
    api.close()


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    with machines(1) as running:
        yield running[0]


def host_of(m: Machine, folder: Path) -> DockerHost:
    """The machine as the spawner sees a registered host (TLS files on the Hub's disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, pem in (("ca", m.ca), ("cert", m.client_cert), ("key", m.client_key)):
        path = folder / f"{m.name}-{part}.pem"
        path.write_text(pem)
        paths[part] = str(path)
    return DockerHost(
        name=m.name,
        base_url=m.endpoint,
        host_ip=m.ip,
        tls=DockerTLS(ca_cert=paths["ca"], client_cert=paths["cert"], client_key=paths["key"]),
        on_hub_machine=False,
    )


def config_for(server: RegistryServer | None, **extra: Any) -> Config:
    c = Config()
    if server is not None:
        c.ImageDistribution.registry = server.address
        c.ImageDistribution.registry_username = server.username
        c.ImageDistribution.registry_password = server.password
        c.ImageDistribution.registry_ca_file = server.ca_file
    else:
        c.ImageDistribution.registry = ""
    for key, value in extra.items():
        setattr(c.ImageDistribution, key, value)
    return c


def fake_spawner(host: DockerHost, config: Config, registry: Registry | None = None) -> Any:
    """What `put_image_on_host` uses of a `PlacementSpawner`."""
    events: list[tuple[int, str]] = []

    async def record_image(transfer: Any) -> None:
        assert registry is not None
        registry.record_image(
            transfer.host,
            transfer.image,
            transfer.path,
            digest=transfer.digest,
            detail=transfer.detail,
            seconds=transfer.seconds,
        )

    return SimpleNamespace(
        host=host,
        config=config,
        log=log,
        _log_name="test",
        events=events,
        emit=lambda progress, message: events.append((progress, message)),
        host_provider=SimpleNamespace(record_image=record_image),
    )


def register(registry: Registry, m: Machine) -> None:
    registry.add_server(m.registration())


def test_a_machine_pulls_the_image_from_the_registry(
    registry_server: RegistryServer,
    tags: dict[str, str],
    machine: Machine,
    registry: Registry,
    tmp_path: Path,
) -> None:
    host = host_of(machine, tmp_path)
    register(registry, machine)
    image = tags["pulled"]
    assert not machine.has_image(image)
    spawner = fake_spawner(host, config_for(registry_server), registry)
    transfer = asyncio.run(put_image_on_host(spawner, image))
    assert transfer is not None and transfer.path == "registry", transfer

    with machine.client() as c:
        info = c.api.inspect_image(image)
    repo = f"{registry_server.address}/{image.split(':')[0]}"
    assert transfer.digest.startswith(repo + "@sha256:"), transfer
    assert transfer.digest in info["RepoDigests"], info["RepoDigests"]
    messages = [m for _, m in spawner.events]
    assert f"Pulling image on {machine.name}: 0%" in messages, messages
    assert f"Pulling image on {machine.name}: 100%" in messages, messages

    shown = registry.host_images()[machine.name]
    assert [(i["image"], i["path"], i["digest"]) for i in shown] == [
        (image, "registry", transfer.digest)
    ]
    # It is there now: the next start does nothing.
    assert asyncio.run(put_image_on_host(spawner, image)) is None


def test_a_machine_that_cannot_reach_the_registry_gets_a_stream(
    registry_server: RegistryServer,
    tags: dict[str, str],
    machine: Machine,
    registry: Registry,
    tmp_path: Path,
) -> None:
    host = host_of(machine, tmp_path)
    register(registry, machine)
    image = tags["streamed"]
    port = registry_server.address.rsplit(":", 1)[1]
    rule = ["INPUT", "-s", machine.ip, "-p", "tcp", "--dport", port, "-j", "REJECT"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        spawner = fake_spawner(host, config_for(registry_server), registry)
        transfer = asyncio.run(put_image_on_host(spawner, image))
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)
    assert transfer is not None and transfer.path == "stream", transfer
    assert "registry unreachable" in transfer.detail, transfer
    messages = [m for _, m in spawner.events]
    assert f"Copying image to {machine.name} (registry unreachable)" in messages, messages
    assert any(m.startswith(f"Copying image to {machine.name}: ") for m in messages), messages
    with machine.client() as c:
        info = c.api.inspect_image(image)
    assert not [d for d in info.get("RepoDigests", []) if registry_server.address in d], info
    shown = {i["image"]: i for i in registry.host_images()[machine.name]}
    assert shown[image]["path"] == "stream", shown


def test_a_wrong_registry_url_fails_fast_with_a_clear_message(
    tags: dict[str, str], machine: Machine, tmp_path: Path
) -> None:
    host = host_of(machine, tmp_path)
    # A port of this box where nothing listens (this box's egress proxy would answer an
    # address outside it with its own certificate, a different message).
    wrong = f"{machine.gateway}:1"
    config = config_for(None, registry=wrong, check_timeout=3.0)
    spawner = fake_spawner(host, config)
    started = time.monotonic()
    with pytest.raises(web.HTTPError) as raised:
        asyncio.run(put_image_on_host(spawner, tags["big"]))
    took = time.monotonic() - started
    message = spawner.events[-1][1]
    assert f"the image registry {wrong} does not answer from the Hub" in message, message
    assert message in str(raised.value)
    assert took < 20, took
    assert not machine.has_image(tags["big"])


def test_bad_registry_credentials_say_so(
    registry_server: RegistryServer, tags: dict[str, str], machine: Machine, tmp_path: Path
) -> None:
    host = host_of(machine, tmp_path)
    config = config_for(registry_server, registry_password="wrong-password")
    spawner = fake_spawner(host, config)
    with pytest.raises(web.HTTPError) as raised:
        asyncio.run(put_image_on_host(spawner, tags["big"]))
    assert "refused the credentials (401)" in str(raised.value), raised.value
    assert "refused the credentials (401)" in spawner.events[-1][1]


def test_a_full_machine_says_no_space(tags: dict[str, str], tmp_path: Path) -> None:
    with start_machines(1, data_size="6m") as running:
        full = running[0]
        host = host_of(full, tmp_path)
        spawner = fake_spawner(host, config_for(None, stream_timeout=120.0))
        started = time.monotonic()
        with pytest.raises(web.HTTPError) as raised:
            asyncio.run(put_image_on_host(spawner, tags["big"]))
        assert f"no space left on {full.name}" in str(raised.value), raised.value
        assert f"no space left on {full.name}" in spawner.events[-1][1]
        assert time.monotonic() - started < 120
        assert not full.has_image(tags["big"])


# ---- ahead of a spawn: pulls when a host is registered and when the image changes --------


def puller_for(registry: Registry, server: RegistryServer | None, images: list[str], **extra: Any):  # type: ignore[no-untyped-def]
    """The placement service's background puller, as `service.config.image_puller` makes it."""
    from codeyard.placement.image_pulls import ImagePuller
    from codeyard.spawner.image_transfer import ImageDistribution

    distribution = ImageDistribution(
        registry=server.address if server else "",
        registry_ca_file=server.ca_file if server else "",
        **extra,
    )
    return ImagePuller(registry, distribution, images)


async def servers_page(service: Any, token: str) -> str:
    from tornado.httpclient import AsyncHTTPClient

    page = await AsyncHTTPClient().fetch(
        service.url + "servers", headers={"Authorization": f"token {token}"}, raise_error=False
    )
    assert page.code == 200, page.code
    return page.body.decode()


def registration(m: Machine, name: str = "") -> dict[str, Any]:
    return m.registration(name=name or m.name)


def shown_image(registry: Registry, host: str, image: str) -> dict[str, Any]:
    return {i["image"]: i for i in registry.host_images().get(host, [])}.get(image, {})


@pytest.mark.asyncio
async def test_registration_answers_at_once_and_the_pull_follows(  # type: ignore[no-untyped-def]
    api, service, hub_tokens, registry: Registry, registry_server: RegistryServer, machine: Machine
) -> None:
    image = _import(f"codeyard-test/tiny:{secrets.token_hex(3)}-reg")
    _push(registry_server, image)
    registry.registry_logins.set(
        registry_server.address, registry_server.username, registry_server.password
    )
    service.image_puller = puller_for(registry, registry_server, [image])
    started = time.monotonic()
    status, body = await api("POST", "servers", body=registration(machine))
    answered = time.monotonic() - started
    assert status == 201, body
    await service.image_puller.wait(machine.name)
    pulled = time.monotonic() - started
    print(f"\nregistration answered in {answered:.2f}s, image pulled {pulled:.2f}s after it")
    shown = shown_image(registry, machine.name, image)
    assert (shown["state"], shown["path"]) == ("ok", "registry"), shown
    with machine.client() as c:
        digests = c.api.inspect_image(image)["RepoDigests"]
    assert shown["digest"].startswith(f"{registry_server.address}/") and shown["digest"] in digests
    html = await servers_page(service, hub_tokens["admin"])
    assert f'data-image="{image}" data-path="registry"' in html, html
    # Already there: pulling again changes nothing, and a spawn would find it.
    service.image_puller.start(machine.name)
    await service.image_puller.wait(machine.name)
    assert shown_image(registry, machine.name, image)["digest"] == shown["digest"]


@pytest.mark.asyncio
async def test_a_registry_that_does_not_answer_never_holds_up_registration(  # type: ignore[no-untyped-def]
    api, service, hub_tokens, registry: Registry, tags: dict[str, str], machine: Machine
) -> None:
    # An address on the machines' bridge that nobody has: connects hang until the time limit.
    nowhere = f"{machine.gateway.rsplit('.', 1)[0]}.250:5000"
    service.image_puller = puller_for(registry, None, [tags["big"]], check_timeout=3.0)
    service.image_puller.distribution.registry = nowhere
    started = time.monotonic()
    status, body = await api("POST", "servers", body=registration(machine))
    answered = time.monotonic() - started
    assert status == 201, body
    assert answered < 2.5, answered  # the registry check alone takes 3 s
    for _ in range(50):  # up to 2.5 s
        if shown_image(registry, machine.name, tags["big"]):
            break
        await asyncio.sleep(0.05)
    # Recorded before the registry check, which alone takes 3 s: the page says it runs.
    assert shown_image(registry, machine.name, tags["big"])["state"] == "pulling"
    await service.image_puller.wait(machine.name)
    shown = shown_image(registry, machine.name, tags["big"])
    assert shown["state"] == "failed", shown
    assert f"the image registry {nowhere} does not answer from the Hub" in shown["detail"], shown
    html = await servers_page(service, hub_tokens["admin"])
    assert (
        f'data-image="{tags["big"]}" data-path="registry" data-digest="" data-state="failed"'
        in html
    )
    assert f"the image registry {nowhere} does not answer" in html


@pytest.mark.asyncio
async def test_refused_credentials_are_shown_on_the_host_page(  # type: ignore[no-untyped-def]
    api,
    service,
    hub_tokens,
    registry: Registry,
    registry_server: RegistryServer,
    tags: dict[str, str],
    machine: Machine,
) -> None:
    registry.registry_logins.set(registry_server.address, registry_server.username, "wrong-pw")
    service.image_puller = puller_for(registry, registry_server, [tags["big"]])
    status, body = await api("POST", "servers", body=registration(machine))
    assert status == 201, body
    await service.image_puller.wait(machine.name)
    shown = shown_image(registry, machine.name, tags["big"])
    assert shown["state"] == "failed" and "refused the credentials (401)" in shown["detail"], shown
    html = await servers_page(service, hub_tokens["admin"])
    assert "refused the credentials (401)" in html and "wrong-pw" not in html
    assert not machine.has_image(tags["big"])


@pytest.mark.asyncio
async def test_a_full_host_shows_no_space_on_its_page(  # type: ignore[no-untyped-def]
    api,
    service,
    hub_tokens,
    registry: Registry,
    registry_server: RegistryServer,
    tags: dict[str, str],
) -> None:
    _push(registry_server, tags["big"])
    registry.registry_logins.set(
        registry_server.address, registry_server.username, registry_server.password
    )
    with start_machines(1, data_size="6m") as running:
        full = running[0]
        service.image_puller = puller_for(registry, registry_server, [tags["big"]])
        status, body = await api("POST", "servers", body=registration(full))
        assert status == 201, body
        await asyncio.wait_for(service.image_puller.wait(full.name), 180)
        shown = shown_image(registry, full.name, tags["big"])
        assert shown["state"] == "failed", shown
        assert f"no space left on {full.name}" in shown["detail"], shown
        html = await servers_page(service, hub_tokens["admin"])
        assert f"no space left on {full.name}" in html


@pytest.mark.asyncio
async def test_a_new_image_reaches_every_host_that_is_up(
    registry: Registry, registry_server: RegistryServer, machine: Machine
) -> None:
    """The service's start with a new image tag (a rebuilt image): every host not down gets
    it; a host that is down is left alone."""
    registry.registry_logins.set(
        registry_server.address, registry_server.username, registry_server.password
    )
    register(registry, machine)
    registry.add_server({"name": "gone", "endpoint": "unix:///nonexistent/docker.sock"})
    registry.set_state("gone", ServerState.down)
    image = _import(f"codeyard-test/tiny:{secrets.token_hex(3)}-new")
    _push(registry_server, image)
    puller = puller_for(registry, registry_server, [image])
    puller.start_all()
    await puller.wait()
    shown = shown_image(registry, machine.name, image)
    assert (shown["state"], shown["path"]) == ("ok", "registry"), shown
    assert machine.has_image(image)
    assert "gone" not in registry.host_images()
