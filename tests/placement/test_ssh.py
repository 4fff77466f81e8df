"""An `ssh://` host works like a TLS one: test, place, failover, with only a stored key."""

from __future__ import annotations

import pytest
from placement_engines import fake_spawner

from codeyard.placement.probe import probe
from codeyard.placement.provider import RegistryHostProvider

pytestmark = pytest.mark.asyncio


def _ssh_host(sshd, engine, known_hosts: bool = True) -> dict:  # type: ignore[no-untyped-def]
    secret = {"kind": "ssh", "key": sshd.client_key}
    if known_hosts:
        secret["known_hosts"] = sshd.known_hosts
    return {
        "name": f"ssh-{engine.name}",
        "endpoint": sshd.endpoint(str(engine.root / "docker.sock")),
        "credential": secret,
        "storage_shared": True,
    }


async def test_ssh_host_registers_and_tests_through_the_api(api, sshd, engines) -> None:  # type: ignore[no-untyped-def]
    status, created = await api("POST", "servers", body=_ssh_host(sshd, engines[1]))
    assert status == 201, created
    assert set(created["credential"]["fingerprints"]) == {"key", "host"}
    assert "OPENSSH" not in repr(created)
    status, body = await api("POST", f"servers/{created['id']}/test")
    assert body["result"]["ok"], body["result"]
    assert body["result"]["docker_root"].startswith(str(engines[1].root))


async def test_wrong_key_or_host_key_gives_a_clear_error(sshd, engines) -> None:  # type: ignore[no-untyped-def]
    from placement_sshd import _keypair

    spec = _ssh_host(sshd, engines[1])
    endpoint, secret = spec["endpoint"], spec["credential"]
    result = probe(endpoint, "ssh", {**secret, "key": _keypair()[0]}, timeout=5)
    assert result["error"].startswith("ssh: ") and "Permission denied" in result["error"]
    other_host = sshd.known_hosts.split()[0] + " " + _keypair()[1]
    result = probe(endpoint, "ssh", {**secret, "known_hosts": other_host}, timeout=5)
    assert "Host key verification failed" in result["error"]


async def test_provider_places_on_ssh_host_and_spawner_client_works(  # type: ignore[no-untyped-def]
    api, sshd, engines, registry
) -> None:
    from codeyard.spawner.clients import make_client

    await api("POST", "servers", body=_ssh_host(sshd, engines[0]))
    provider = RegistryHostProvider()
    provider.registry = registry
    spawner = fake_spawner("sam")
    host = await provider.choose(spawner)
    assert host.name == f"ssh-{engines[0].name}" and host.base_url.startswith("unix://")
    assert host.host_ip == sshd.ip
    info = make_client(host).info()
    assert info["DockerRootDir"].startswith(str(engines[0].root))
    assert provider.get(host.name).base_url == host.base_url  # the tunnel is reused
    provider.close()
