"""An `ssh://` host works like a TLS one: test, place, failover, with only a stored key."""

from __future__ import annotations

import pytest
from placement_engines import fake_spawner

from codeyard.placement.crypto import known_hosts_fingerprint
from codeyard.placement.health import HealthMonitor
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


async def test_ssh_host_without_known_hosts_is_pinned_after_the_admin_confirms(  # type: ignore[no-untyped-def]
    api, sshd, engines
) -> None:
    spec = {**_ssh_host(sshd, engines[1], known_hosts=False), "name": "ssh-confirm"}
    status, body = await api("POST", "servers", body=spec)
    expected = known_hosts_fingerprint(sshd.known_hosts)
    assert status == 409, body
    assert f"confirm the host key {expected}" in body["message"], body
    status, _ = await api("GET", "servers/ssh-confirm")
    assert status == 404  # nothing registered before the admin confirmed
    wrong = {**spec["credential"], "host_key_fingerprint": "SHA256:" + "A" * 43}
    status, body = await api("POST", "servers", body={**spec, "credential": wrong})
    assert status == 409 and "host key changed" in body["message"], body
    confirmed = {**spec["credential"], "host_key_fingerprint": expected}
    status, created = await api("POST", "servers", body={**spec, "credential": confirmed})
    assert status == 201, created
    assert created["credential"]["fingerprints"]["host"] == expected
    status, body = await api("POST", f"servers/{created['id']}/test")
    assert body["result"]["ok"], body["result"]


async def test_a_tunnel_never_trusts_an_unpinned_host_key(sshd, engines) -> None:  # type: ignore[no-untyped-def]
    spec = _ssh_host(sshd, engines[1], known_hosts=False)
    result = probe(spec["endpoint"], "ssh", spec["credential"], timeout=5)
    assert not result["ok"] and "no pinned host key" in result["error"], result


# Last in the module: it gives the shared sshd a new host key (its `known_hosts` follows).
async def test_a_changed_host_key_is_refused_and_marks_the_host_down(  # type: ignore[no-untyped-def]
    api, sshd, engines, registry
) -> None:
    status, created = await api(
        "POST", "servers", body={**_ssh_host(sshd, engines[1]), "name": "ssh-rekeyed"}
    )
    assert status == 201, created
    monitor = HealthMonitor(registry, timeout=5)
    try:
        assert (await monitor.check_once())[created["id"]] == "active"
        pinned = sshd.known_hosts
        sshd.restart_with_new_host_key()
        assert sshd.known_hosts != pinned
        # Down at the first refusal, not after `failure_threshold` of them.
        assert (await monitor.check_once())[created["id"]] == "down"
    finally:
        await monitor.stop()
    status, server = await api("GET", f"servers/{created['id']}")
    assert server["state"] == "down"
    assert "host key changed" in server["last_test"]["error"], server["last_test"]
    assert "Host key verification failed" in server["last_test"]["error"]
