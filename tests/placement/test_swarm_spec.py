"""The swarm host kind: registered like any host, and turned into a Swarm service spec.

The registry keeps a host's kind ("engine" or "swarm", migration 0008), refuses others, and
the provider hands it to the spawner. `codeyard.spawner.swarm` maps a workspace's size
profile to Swarm limits and reservations, the host's region to a node-label constraint, and
publishes Jupyter's port in host mode with DNS round robin (this kernel has no IPVS, so no
routing mesh or virtual IP). The spawner follows a moved task by its node's address and
published port. The real swarm runs in tests/hub/test_swarm.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from codeyard.placement.database import upgrade
from codeyard.placement.provider import RegistryHostProvider
from codeyard.placement.registry import Registry, RegistryError
from codeyard.spawner.swarm import (
    bind_mounts,
    container_spec,
    current_task,
    endpoint_spec,
    node_address,
    placement_constraints,
    published_port,
    service_resources,
    service_spec,
    task_problem,
    tmpfs_mounts,
)

GIB = 1 << 30


def test_registry_keeps_the_kind_and_refuses_unknown_ones(registry: Registry, ca) -> None:  # type: ignore[no-untyped-def]
    engine = registry.add_server({"name": "one", "endpoint": "unix:///run/one.sock"})
    assert engine["kind"] == "engine"  # the default: every host registered before 0008
    swarm = registry.add_server(
        {
            "name": "cluster",
            "kind": "swarm",
            "endpoint": "tcp://192.0.2.10:2376",
            "credential": ca.bundle(),
            "region": "eu",
            "storage_root": "/mnt/homes",
            "storage_shared": True,
        }
    )
    assert swarm["kind"] == "swarm" and swarm["credential"]["kind"] == "tls"
    assert registry.get_server("cluster")["kind"] == "swarm"
    with pytest.raises(RegistryError, match="kind must be one of"):
        registry.add_server({"name": "bad", "kind": "kubernetes", "endpoint": "unix:///x"})
    with pytest.raises(RegistryError, match="kind must be one of"):
        registry.update_server("one", {"kind": "cluster"})
    # a swarm manager on tcp:// needs the same TLS credential as any engine
    with pytest.raises(RegistryError, match="TLS credential"):
        registry.add_server({"name": "bare", "kind": "swarm", "endpoint": "tcp://192.0.2.11:2376"})


def test_provider_hands_the_kind_to_the_spawner(registry: Registry, ca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry.add_server({"name": "one", "endpoint": "unix:///run/one.sock"})
    registry.add_server(
        {
            "name": "cluster",
            "kind": "swarm",
            "endpoint": "tcp://192.0.2.10:2376",
            "credential": ca.bundle(),
            "region": "eu",
        }
    )
    provider = RegistryHostProvider(runtime_dir=str(tmp_path / "rt"))
    provider.registry = registry
    one, cluster = provider.get("one"), provider.get("cluster")
    assert (one.kind, one.is_swarm) == ("engine", False)
    assert (cluster.kind, cluster.is_swarm, cluster.region) == ("swarm", True, "eu")
    assert cluster.tls is not None  # decrypted to files, as for an engine


def test_migration_0008_marks_existing_hosts_as_engines(db_url: str) -> None:
    upgrade(db_url, "0007_registry_credentials", backup=False)
    path = Path(db_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO servers (id, name, endpoint, region, labels, storage_root,"
            " storage_shared, max_workspaces, cpu_capacity, mem_capacity, state,"
            " consecutive_failures, drain_requested, created) VALUES (1, 'old', 'unix:///d.sock',"
            " '', '{}', '', 0, 0, 0, 0, 'active', 0, 0, '2026-11-01 00:00:00')"
        )
        conn.execute(
            "INSERT INTO placements (user, workspace, server_id, state, mem_reserved, updated,"
            " restart_requested, data_loss_confirmed)"
            " VALUES ('alice', 'w', 1, 'running', 0, '2026-11-01 00:00:00', 0, 0)"
        )
    upgrade(db_url, backup=False)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT kind FROM servers WHERE id = 1").fetchone() == ("engine",)
        # a plain ADD COLUMN: the placement still points at its host
        assert conn.execute("SELECT server_id FROM placements").fetchone() == (1,)


def test_size_profile_becomes_limits_and_a_memory_reservation() -> None:
    resources = service_resources(2.0, 4 * GIB, pids_limit=1024)
    assert resources == {
        "Limits": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 4 * GIB, "Pids": 1024},
        # memory is reserved whole, so Swarm never puts two 4G workspaces into 6G
        "Reservations": {"MemoryBytes": 4 * GIB},
    }
    half = service_resources(0.5, 2 * GIB, mem_reservation=GIB, cpu_reservation=0.25)
    assert half["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 2 * GIB}
    assert half["Reservations"] == {"MemoryBytes": GIB, "NanoCPUs": 250_000_000}
    assert service_resources(0, 0) == {}


def test_region_becomes_a_node_label_constraint() -> None:
    assert placement_constraints("eu") == ["node.labels.codeyard.region==eu"]
    assert placement_constraints("") == []  # no region: any node of the swarm
    assert placement_constraints("us", ["node.role==worker"], label="site") == [
        "node.labels.site==us",
        "node.role==worker",
    ]
    assert placement_constraints("eu", ["node.labels.codeyard.region==eu"]) == [
        "node.labels.codeyard.region==eu"
    ]


def test_endpoint_is_dns_round_robin_with_a_host_mode_port() -> None:
    spec = endpoint_spec(8888)
    assert spec["Mode"] == "dnsrr"  # no virtual IP: IPVS is missing
    assert spec["Ports"] == [{"Protocol": "tcp", "TargetPort": 8888, "PublishMode": "host"}]
    assert "PublishedPort" not in spec["Ports"][0]  # Docker picks one on the task's node


def test_hardening_and_mounts_carry_over_to_the_container_spec() -> None:
    host_config = {
        "cap_drop": ["ALL"],
        "cap_add": ["SYS_PTRACE"],
        "read_only": True,
        "sysctls": {"net.ipv6.conf.lo.disable_ipv6": "0"},
        "pids_limit": 1024,
    }
    mounts = bind_mounts(
        {
            "/mnt/homes/alice/w": {"bind": "/home/jovyan/work", "mode": "rw"},
            "/mnt/ro": {"bind": "/data", "mode": "ro"},
        }
    ) + tmpfs_mounts(
        {
            "/tmp": "rw,exec,nosuid,nodev,mode=1777",
            "/home/jovyan": "rw,exec,nosuid,nodev,mode=0755,uid=1000,gid=1000",
            "/cache": "rw,size=64m,mode=0700",
        }
    )
    spec = container_spec(
        "sha256:abc",
        ["jupyterhub-singleuser", "--port=8888"],
        {"JUPYTERHUB_API_TOKEN": "t"},
        "1000:1000",
        {"codeyard.user": "alice"},
        mounts,
        host_config,
    )
    assert spec["User"] == "1000:1000" and spec["ReadOnly"] is True
    assert spec["CapabilityDrop"] == ["ALL"] and spec["CapabilityAdd"] == ["SYS_PTRACE"]
    assert spec["Sysctls"] == {"net.ipv6.conf.lo.disable_ipv6": "0"}
    assert spec["Env"] == ["JUPYTERHUB_API_TOKEN=t"]
    by_target = {m["Target"]: m for m in spec["Mounts"]}
    assert by_target["/home/jovyan/work"] == {
        "Target": "/home/jovyan/work",
        "Source": "/mnt/homes/alice/w",
        "Type": "bind",
        "ReadOnly": False,
    }
    assert by_target["/data"]["ReadOnly"] is True
    # tmpfs folders keep the engine path's options whole (owner, exec), as tmpfs volumes
    home = by_target["/home/jovyan"]
    assert home["Type"] == "volume", home
    assert home["VolumeOptions"]["DriverConfig"] == {
        "Name": "local",
        "Options": {
            "type": "tmpfs",
            "device": "tmpfs",
            "o": "rw,exec,nosuid,nodev,mode=0755,uid=1000,gid=1000",
        },
    }
    assert by_target["/cache"]["VolumeOptions"]["DriverConfig"]["Options"]["o"] == (
        "rw,size=64m,mode=0700"
    )


def test_service_spec_is_one_replica_restarted_on_failure_only() -> None:
    spec = service_spec(
        "codeyard-alice-w",
        {"Image": "sha256:abc"},
        service_resources(1, GIB),
        placement_constraints("eu"),
        8888,
        {"codeyard.user": "alice"},
        restart_attempts=2,
    )
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert spec["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure", "MaxAttempts": 2}
    assert spec["TaskTemplate"]["Placement"] == {"Constraints": ["node.labels.codeyard.region==eu"]}
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"


def _task(index: int, node: str, desired: str, state: str, port: int | None) -> dict:  # type: ignore[type-arg]
    status: dict = {"State": state, "PortStatus": {}}  # type: ignore[type-arg]
    if port:
        published = {"Protocol": "tcp", "TargetPort": 8888, "PublishedPort": port}
        status["PortStatus"] = {"Ports": [{**published, "PublishMode": "host"}]}
    return {
        "ID": f"t{index}",
        "NodeID": node,
        "DesiredState": desired,
        "Status": status,
        "Version": {"Index": index},
    }


def test_a_moved_task_is_found_on_its_new_node() -> None:
    # During a drain the old task is still shutting down while the new one starts.
    old = _task(10, "n1", "shutdown", "running", 32768)
    waiting = _task(15, "n2", "ready", "assigned", None)  # a replacement waits in "ready"
    assert current_task([old, waiting]) is waiting
    new = _task(20, "n2", "running", "starting", None)
    assert current_task([old, waiting, new]) is new
    assert published_port(new, 8888) is None  # not published yet: the poll waits
    running = _task(21, "n2", "running", "running", 32769)
    assert current_task([old, running]) is running
    assert published_port(running, 8888) == 32769
    assert published_port(running, 9999) is None
    # all tasks ended (the service failed its restarts): the newest says why
    failed = _task(30, "n3", "shutdown", "failed", None)
    failed["Status"]["Err"] = "task: non-zero exit (1)"
    failed["Status"]["ContainerStatus"] = {"ExitCode": 1}
    assert current_task([old, failed]) is failed
    assert task_problem(failed) == "swarm task failed (exit code 1): task: non-zero exit (1)"
    assert current_task([]) is None


def test_node_address_of_workers_and_of_a_manager_listening_everywhere() -> None:
    assert node_address({"Status": {"Addr": "10.98.0.3"}}) == "10.98.0.3"
    manager = {"Status": {"Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "10.98.0.2:2377"}}
    assert node_address(manager) == "10.98.0.2"
