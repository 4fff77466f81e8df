"""A claimed warm container keeps the pool's labels, not `codeyard.user` (labels cannot
change on a running container). When its host comes back after its workspace moved, the
clean-up (`cleanup.remove_stale_containers`) must still remove it: it finds it through the
claim the spawner recorded in the registry (`warm_pool.record_claim`). Real TLS engines,
real containers, the real registry; the containers are made as the pool makes them (its
labels, its registry row), without a Hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import docker
import pytest
from placement_engines import fake_spawner, register
from test_spawner_failover import busybox_sh  # noqa: F401 - the fixture

from codeyard.placement import pool
from codeyard.placement.cleanup import remove_stale_containers
from codeyard.placement.provider import RegistryHostProvider
from codeyard.spawner import warm_pool

pytestmark = pytest.mark.asyncio


async def test_a_claimed_warm_container_of_a_moved_workspace_is_removed(  # type: ignore[no-untyped-def]
    api,
    engines,
    registry,
    busybox_sh,  # noqa: F811
) -> None:
    first, second = engines
    await register(api, engines, storage_shared=True)
    provider = RegistryHostProvider()
    provider.registry = registry
    assert (await provider.choose(fake_spawner("alice"))).name == first.name
    tag = secrets.token_hex(4)
    claimed, waiting = f"codeyard-pool-claimed{tag}", f"codeyard-pool-waiting{tag}"
    labels = {warm_pool.POOL_LABEL: "tiny@busybox", warm_pool.STORAGE_LABEL: "/nfs"}
    with first.client(30) as c:
        for name in (claimed, waiting):
            c.api.create_container(busybox_sh, ["sh"], name=name, labels=labels)
    try:
        # Both were made by the pool; alice's spawn claimed one (its row goes, the claim
        # is recorded), the other still waits in the pool.
        for name in (claimed, waiting):
            assert pool.reserve(registry.sessions, first.name, name, "tiny@busybox", 0)
        assert pool.release(registry.sessions, claimed)
        await warm_pool.record_claim(provider, "alice", "", first.name, claimed)

        # While alice is placed on this host, her claimed container is hers: kept.
        assert await asyncio.to_thread(remove_stale_containers, registry, first.name) == []
        # She moves (an admin's pin; a dead host's failover does the same).
        registry.pin("alice", "", second.name)
        assert (await provider.choose(fake_spawner("alice"))).name == second.name
        removed = await asyncio.to_thread(remove_stale_containers, registry, first.name)
        assert removed == [{"user": "alice", "workspace": "", "container": claimed}]
        with first.client(30) as c:
            names = {x["Names"][0].lstrip("/") for x in c.api.containers(all=True)}
        assert claimed not in names
        assert waiting in names, "a warm container still in the pool is the pool's"
        _, [view] = await api("GET", "workspaces?user=alice")
        assert view["reason"].startswith(f"removed stale container {claimed}")
    finally:
        with first.client(30) as c:
            for name in (claimed, waiting):
                # The claimed one is gone already when the clean-up worked.
                with contextlib.suppress(docker.errors.NotFound):
                    c.api.remove_container(name, force=True)
