"""Policies over three real engines: the chosen host is the engine the spawner then talks to."""

from __future__ import annotations

from collections import Counter

import pytest
from placement_engines import fake_spawner, start_engines

from codeyard.placement.provider import RegistryHostProvider
from codeyard.spawner.clients import make_client

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def third_engine(ca, engines):  # type: ignore[no-untyped-def]
    with start_engines(ca, ["127.0.0.5"]) as (engine,):
        yield engine


@pytest.fixture
def three(engines, third_engine):  # type: ignore[no-untyped-def]
    return [*engines, third_engine]


async def _setup(api, registry, three, regions=("", "", "")) -> RegistryHostProvider:  # type: ignore[no-untyped-def]
    for engine, region in zip(three, regions, strict=True):
        status, body = await api(
            "POST",
            "servers",
            body={
                "name": engine.name,
                "endpoint": engine.endpoint,
                "credential": engine.client_bundle,
                "region": region,
                "max_workspaces": 10,
            },
        )
        assert status == 201, body
    provider = RegistryHostProvider()
    provider.registry = registry
    return provider


async def _spawn_all(provider, users, groups=()):  # type: ignore[no-untyped-def]
    hosts = []
    for user in users:
        host = await provider.choose(fake_spawner(user, groups))
        await provider.started(fake_spawner(user, groups))
        hosts.append(host)
    return hosts


async def test_least_loaded_spreads_twelve_users_evenly(api, registry, three) -> None:  # type: ignore[no-untyped-def]
    provider = await _setup(api, registry, three)
    hosts = await _spawn_all(provider, [f"user{i:02d}" for i in range(12)])
    assert Counter(h.name for h in hosts) == {e.name: 4 for e in three}
    roots = {e.name: str(e.root) for e in three}
    for host in {h.name: h for h in hosts}.values():  # each name is really that engine
        assert make_client(host).info()["DockerRootDir"].startswith(roots[host.name])
    _, servers = await api("GET", "servers")
    assert [s["load"]["running"] for s in servers] == [4, 4, 4]


async def test_round_robin_cycles_in_order(api, registry, three) -> None:  # type: ignore[no-untyped-def]
    provider = await _setup(api, registry, three)
    registry.set_policy("round-robin")
    hosts = await _spawn_all(provider, [f"user{i:02d}" for i in range(7)])
    order = sorted(e.name for e in three)
    assert [h.name for h in hosts] == (order * 3)[:7]


async def test_region_keeps_a_groups_users_in_their_region(api, registry, three) -> None:  # type: ignore[no-untyped-def]
    provider = await _setup(api, registry, three, regions=("eu", "eu", "us"))
    registry.set_policy(
        "region", options={"group_regions": {"berlin": "eu", "boston": "us"}, "fallback": "deny"}
    )
    eu = {h.name for h in await _spawn_all(provider, [f"b{i}" for i in range(6)], ("berlin",))}
    us = {h.name for h in await _spawn_all(provider, [f"m{i}" for i in range(3)], ("boston",))}
    assert eu == {three[0].name, three[1].name}
    assert us == {three[2].name}
    with pytest.raises(Exception, match="fallback is 'deny'"):
        await provider.choose(fake_spawner("nobody", ("elsewhere",)))
