"""On real engines: register through the API, `test`, drain, and failover after a kill."""

from __future__ import annotations

import os

import pytest
from placement_engines import fake_spawner, register

from codeyard.placement.health import HealthMonitor
from codeyard.placement.provider import RegistryHostProvider

pytestmark = pytest.mark.asyncio


async def test_test_endpoint_reports_engine_facts(api, engines) -> None:  # type: ignore[no-untyped-def]
    await register(api, engines, storage_shared=True)
    for engine in engines:
        status, body = await api("POST", f"servers/{engine.name}/test")
        assert status == 200
        result = body["result"]
        assert result["ok"], result
        assert {
            "version",
            "cpus",
            "mem_total",
            "containers_running",
            "latency_ms",
            "disk_used",
        } <= set(result)
        assert body["server"]["last_test"]["version"] == result["version"]
        assert body["server"]["last_seen"] is not None


async def test_bad_certificate_gives_a_clear_error_in_test(api, engines, ca) -> None:  # type: ignore[no-untyped-def]
    from placement_pki import CA

    engine = engines[0]
    stranger = CA("stranger")
    status, _ = await api(
        "POST",
        "servers",
        body={"name": "bad", "endpoint": engine.endpoint, "credential": stranger.bundle()},
    )
    assert status == 201
    status, body = await api("POST", "servers/bad/test")
    assert status == 200
    assert body["result"]["ok"] is False
    assert body["result"]["error"].startswith("TLS: the engine's certificate failed verification")
    assert body["server"]["last_test"]["error"] == body["result"]["error"]


async def test_provider_gives_the_spawner_a_working_tls_host(  # type: ignore[no-untyped-def]
    api, engines, registry, tmp_path
) -> None:
    from codeyard.spawner.clients import make_client

    await register(api, engines, storage_shared=True)
    provider = RegistryHostProvider(runtime_dir=str(tmp_path / "tls"))
    provider.registry = registry
    host = await provider.choose(fake_spawner("alice"))
    assert host.name == engines[0].name and host.host_ip == engines[0].ip
    assert oct((tmp_path / "tls").stat().st_mode & 0o777) == "0o700"
    assert oct(os.stat(host.tls.client_key).st_mode & 0o777) == "0o600"
    client = make_client(host)
    assert client.ping()
    assert provider.get(host.name) == host
    with pytest.raises(Exception, match="gone"):
        provider.get("gone")


async def test_drain_new_spawns_avoid_host_running_stay(api, engines, registry) -> None:  # type: ignore[no-untyped-def]
    provider = RegistryHostProvider()
    provider.registry = registry
    await register(api, engines, storage_shared=True)
    first = await provider.choose(fake_spawner("alice"))
    await provider.started(fake_spawner("alice"))
    status, _ = await api("POST", f"servers/{first.name}/drain")
    assert status == 200
    others = {(await provider.choose(fake_spawner(f"u{i}"))).name for i in range(4)}
    assert first.name not in others
    _, placements = await api("GET", "workspaces?user=alice")
    assert placements[0]["server"] == first.name and placements[0]["state"] == "running"


async def test_killed_engine_is_marked_down_and_next_start_moves(api, engines, registry) -> None:  # type: ignore[no-untyped-def]
    provider = RegistryHostProvider()
    provider.registry = registry
    registry.settings.failure_threshold = 3
    await register(api, engines, storage_shared=True)
    victim, healthy = engines
    assert (await provider.choose(fake_spawner("alice"))).name == victim.name
    await provider.started(fake_spawner("alice"))

    monitor = HealthMonitor(registry, interval=0.2, timeout=2)
    try:
        assert set((await monitor.check_once()).values()) == {"active"}
        victim.kill()
        states = [
            (await monitor.check_once())[registry.get_server(victim.name)["id"]] for _ in range(3)
        ]
        assert states == ["active", "active", "down"]
        _, server = await api("GET", f"servers/{victim.name}")
        assert server["state"] == "down" and "refused" in server["last_test"]["error"]
        _, [alice] = await api("GET", "workspaces?user=alice")
        assert "home survives" in alice["note"]

        await provider.stopped(fake_spawner("alice"))
        moved = await provider.choose(fake_spawner("alice"))
        assert moved.name == healthy.name
        assert (await provider.choose(fake_spawner("bob"))).name == healthy.name
        _, decisions = await api("GET", "decisions?limit=2")
        assert f"moved from {victim.name} (down)" in decisions[1]["reason"]
    finally:
        victim.stop()
        victim.start()
    assert (await monitor.check_once())[registry.get_server(victim.name)["id"]] == "active"
    await monitor.stop()


async def test_a_failed_cleanup_after_a_return_is_retried_until_it_succeeds(  # type: ignore[no-untyped-def]
    api, engines, registry, monkeypatch
) -> None:
    """The engine is really killed and restarted. The failed clean-up is injected: a host
    that answers a ping but fails the container listing cannot be produced on demand."""
    from codeyard.placement import health

    registry.settings.failure_threshold = 1
    await register(api, engines, storage_shared=True)
    victim = engines[0]
    sid = registry.get_server(victim.name)["id"]
    calls: list[int] = []

    def flaky(reg, server_id, timeout=10.0):  # type: ignore[no-untyped-def]
        calls.append(server_id)
        if len(calls) == 1:
            raise ConnectionError("injected: the container listing failed")
        return health_real(reg, server_id, timeout=timeout)

    health_real = health.remove_stale_containers
    monkeypatch.setattr(health, "remove_stale_containers", flaky)
    monitor = HealthMonitor(registry, interval=0.2, timeout=2)
    try:
        victim.kill()
        assert (await monitor.check_once())[sid] == "down"
        assert calls == []
    finally:
        victim.stop()
        victim.start()
    assert (await monitor.check_once())[sid] == "active"
    assert calls == [sid] and monitor.cleanup_pending == {sid}  # failed, kept
    await monitor.check_once()
    assert calls == [sid, sid] and monitor.cleanup_pending == set()  # retried, done
    await monitor.check_once()
    assert calls == [sid, sid]  # not again once it succeeded
    await monitor.stop()


async def test_no_host_left_fails_the_spawn_naming_why(api, engines, registry) -> None:  # type: ignore[no-untyped-def]
    from tornado import web

    provider = RegistryHostProvider()
    provider.registry = registry
    await register(api, engines, storage_shared=True, max_workspaces=1)
    await provider.choose(fake_spawner("a"))
    await provider.choose(fake_spawner("b"))
    with pytest.raises(web.HTTPError) as err:
        await provider.choose(fake_spawner("c"))
    assert err.value.status_code == 503
    assert "all 2 hosts are full" in err.value.log_message
