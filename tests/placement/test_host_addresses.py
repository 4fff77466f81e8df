"""Each host's two addresses (where its containers reach the Hub, where the proxy reaches its
workspaces): derived from the route unless an admin set them, stored in the registry,
migrated from the older `host_ip` label, shown on the servers page, and what the spawner
hands a container per host."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from codeyard.placement.addresses import (
    LOCAL_BRIDGE_IP,
    HubUnreachable,
    derived_addresses,
    effective_hub_connect_ip,
    host_addresses,
    route_source,
)
from codeyard.placement.database import open_db, upgrade
from codeyard.placement.hosts import DockerHost
from codeyard.placement.models import Server
from codeyard.placement.provider import RegistryHostProvider
from codeyard.placement.registry import Registry, RegistryError
from codeyard.spawner import host_env


def test_local_engine_keeps_the_bridge_and_loopback() -> None:
    a = derived_addresses("unix:///var/run/docker.sock")
    assert (a.hub_connect_ip, a.publish_ip) == (LOCAL_BRIDGE_IP, "127.0.0.1")
    # An engine on this box behind a loopback endpoint: same network stack as the Hub.
    a = derived_addresses("tcp://127.0.0.3:2376")
    assert (a.hub_connect_ip, a.publish_ip) == (LOCAL_BRIDGE_IP, "127.0.0.3")


def test_remote_engine_gets_the_hubs_source_address_on_the_route() -> None:
    target = "192.0.2.77"  # TEST-NET-1: routed by the default route, nothing is sent
    source = route_source(target)
    if not source:
        pytest.skip("no route to TEST-NET-1 on this box")
    a = derived_addresses(f"tcp://{target}:2376")
    assert (a.hub_connect_ip, a.publish_ip) == (source, target)
    assert not a.hub_connect_ip_set and not a.publish_ip_set
    ssh = derived_addresses(f"ssh://deploy@{target}:22")
    assert (ssh.hub_connect_ip, ssh.publish_ip) == (source, target)


def test_admin_values_win_and_are_marked_set() -> None:
    a = host_addresses("tcp://192.0.2.77:2376", "203.0.113.5", "198.51.100.9")
    assert (a.hub_connect_ip, a.publish_ip) == ("203.0.113.5", "198.51.100.9")
    assert a.hub_connect_ip_set and a.publish_ip_set


def test_where_the_hub_listens_decides_what_a_host_is_told() -> None:
    remote = host_addresses("tcp://192.0.2.77:2376", "10.0.0.1")
    derived = host_addresses("tcp://192.0.2.77:2376")
    local = host_addresses("unix:///var/run/docker.sock")
    # every interface: each host's own address for the Hub
    assert effective_hub_connect_ip("0.0.0.0", "far", remote, False) == "10.0.0.1"
    assert effective_hub_connect_ip("0.0.0.0", "local", local, True) == LOCAL_BRIDGE_IP
    # one address every host reaches: that one, unless an admin set the host's
    assert effective_hub_connect_ip("10.1.1.1", "far", derived, False) == "10.1.1.1"
    assert effective_hub_connect_ip("10.1.1.1", "far", remote, False) == "10.0.0.1"
    assert effective_hub_connect_ip(LOCAL_BRIDGE_IP, "local", local, True) == LOCAL_BRIDGE_IP
    # the docker bridge or loopback: never handed to a host on another machine
    for hub_ip in (LOCAL_BRIDGE_IP, "127.0.0.1"):
        with pytest.raises(HubUnreachable, match="far"):
            effective_hub_connect_ip(hub_ip, "far", derived, False)


def test_registry_stores_validates_and_shows_addresses(registry: Registry, ca) -> None:  # type: ignore[no-untyped-def]
    body = {"name": "far", "endpoint": "tcp://192.0.2.77:2376", "credential": ca.bundle()}
    server = registry.add_server({**body, "hub_connect_ip": "10.9.0.1", "publish_ip": ""})
    assert server["hub_connect_ip"] == "10.9.0.1" and server["publish_ip"] is None
    assert server["addresses"]["hub_connect_ip"] == "10.9.0.1"
    assert server["addresses"]["hub_connect_ip_set"] is True
    assert server["addresses"]["publish_ip"] == "192.0.2.77"
    with pytest.raises(RegistryError, match="IP address"):
        registry.update_server("far", {"publish_ip": "not an address"})
    server = registry.update_server("far", {"hub_connect_ip": None, "publish_ip": "192.0.2.78"})
    assert server["hub_connect_ip"] is None and server["publish_ip"] == "192.0.2.78"


def test_provider_builds_hosts_with_their_addresses(registry: Registry, ca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry.add_server({"name": "here", "endpoint": "unix:///run/x.sock"})
    registry.add_server(
        {
            "name": "far",
            "endpoint": "tcp://192.0.2.77:2376",
            "credential": ca.bundle(),
            "hub_connect_ip": "10.9.0.1",
        }
    )
    provider = RegistryHostProvider(runtime_dir=str(tmp_path / "rt"))
    provider.registry = registry
    here, far = provider.get("here"), provider.get("far")
    assert (here.hub_connect_ip, here.host_ip, here.on_hub_machine) == (
        LOCAL_BRIDGE_IP,
        "127.0.0.1",
        True,
    )
    assert (far.hub_connect_ip, far.host_ip, far.on_hub_machine) == (
        "10.9.0.1",
        "192.0.2.77",
        False,
    )


def test_migration_moves_the_host_ip_label_into_publish_ip(db_url: str) -> None:
    upgrade(db_url, "0003_drain_intent", backup=False)
    path = Path(db_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        for sid, labels in ((1, '{"host_ip": "127.0.0.1", "gpu": "no"}'), (2, "{}")):
            conn.execute(
                "INSERT INTO servers (id, name, endpoint, region, labels, storage_root,"
                " storage_shared, max_workspaces, cpu_capacity, mem_capacity, state,"
                " consecutive_failures, drain_requested, created) VALUES"
                f" ({sid}, 'hs{sid}', 'unix:///d.sock', 'eu', '{labels}', '/srv', 0, 0, 0,"
                " 0, 'active', 0, 0, '2026-11-01 00:00:00')"
            )
    upgrade(db_url, backup=False)
    with open_db(db_url)() as db:
        rows = {s.name: (s.publish_ip, s.hub_connect_ip, s.labels) for s in db.query(Server)}
    assert rows == {"hs1": ("127.0.0.1", None, {"gpu": "no"}), "hs2": (None, None, {})}

    from alembic import command

    from codeyard.placement.database import alembic_config

    command.downgrade(alembic_config(db_url), "0003_drain_intent")
    with sqlite3.connect(path) as conn:
        labels = conn.execute("SELECT labels FROM servers WHERE id = 1").fetchone()[0]
    assert '"host_ip": "127.0.0.1"' in labels


def test_container_environment_per_host() -> None:
    here = DockerHost(name="local", storage_is_local=True)
    far = DockerHost(
        name="far",
        base_url="tcp://192.0.2.77:2376",
        host_ip="192.0.2.77",
        hub_connect_ip="10.9.0.1",
        on_hub_machine=False,
    )
    volumes = {"/srv/model/tokenizer.json": {"bind": "/opt/codeyard/tokenizer.json", "mode": "ro"}}
    env = {"CODEYARD_TOKENIZER_FILE": "/opt/codeyard/tokenizer.json", "OTHER": "/opt/x"}
    address = host_env.hub_address("0.0.0.0", far)
    assert address == "10.9.0.1"
    assert host_env.hub_connect_url(address, 8081) == "http://10.9.0.1:8081"
    services = {
        "CODEYARD_LLM_URL": "http://{hub}:8002",
        "CODEYARD_AUDIT_URL": "http://{hub}:8004/services/codeyard-audit",
    }
    out = host_env.host_environment(env, far, address, services, {}, volumes)
    assert out == {
        "CODEYARD_LLM_URL": "http://10.9.0.1:8002",
        "CODEYARD_AUDIT_URL": "http://10.9.0.1:8004/services/codeyard-audit",
        "OTHER": "/opt/x",
    }
    out = host_env.host_environment(env, here, LOCAL_BRIDGE_IP, services, {}, volumes)
    assert out["CODEYARD_LLM_URL"] == "http://172.17.0.1:8002"
    assert out["CODEYARD_AUDIT_URL"] == "http://172.17.0.1:8004/services/codeyard-audit"
    assert out["CODEYARD_TOKENIZER_FILE"] == "/opt/codeyard/tokenizer.json"
    # A service URL the site config set is its own choice.
    configured = {"CODEYARD_LLM_URL": "http://llm.example:80"}
    env2 = {**env, **configured}
    out = host_env.host_environment(env2, far, address, services, configured, volumes)
    assert out["CODEYARD_LLM_URL"] == "http://llm.example:80"
    assert out["CODEYARD_AUDIT_URL"] == "http://10.9.0.1:8004/services/codeyard-audit"


@pytest.mark.asyncio
async def test_servers_page_shows_each_hosts_addresses(service, hub_tokens, registry, ca) -> None:  # type: ignore[no-untyped-def]
    registry.add_server({"name": "here", "endpoint": "unix:///run/x.sock"})
    registry.add_server(
        {"name": "far", "endpoint": "tcp://192.0.2.77:2376", "credential": ca.bundle(),
         "hub_connect_ip": "10.9.0.1"}
    )  # fmt: skip
    resp = await AsyncHTTPClient().fetch(
        service.url + "servers", headers={"Authorization": f"token {hub_tokens['admin']}"}
    )
    page = resp.body.decode()
    assert 'data-hub-connect-ip="172.17.0.1" data-publish-ip="127.0.0.1"' in page
    assert 'data-hub-connect-ip="10.9.0.1" data-publish-ip="192.0.2.77"' in page
    assert "workspaces reach the Hub at <code>10.9.0.1</code>" in page
    assert "(set)" in page and "(derived)" in page
