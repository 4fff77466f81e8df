"""The admin REST API, authenticated by a real Hub: admin scope required, secrets never out."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio


async def test_users_without_the_admin_scope_get_403(api) -> None:  # type: ignore[no-untyped-def]
    for method, path in (("GET", "servers"), ("POST", "servers"), ("GET", "workspaces")):
        status, body = await api(method, path, token="dev", body={} if method == "POST" else None)
        assert status == 403, (method, path, body)
        assert "custom:codeyard-admin" in body["message"]
    status, _ = await api("GET", "servers", token=None)
    assert status == 403
    status, _ = await api("GET", "servers", token="admin")
    assert status == 200


async def test_register_list_patch_delete(api, ca) -> None:  # type: ignore[no-untyped-def]
    bundle = ca.bundle()
    spec = {
        "name": "hs9",
        "endpoint": "tcp://127.0.0.9:2376",
        "region": "eu",
        "labels": {"disk": "ssd"},
        "storage_root": "/srv/homes",
        "storage_shared": True,
        "max_workspaces": 20,
        "cpu_capacity": 8,
        "mem_capacity": 32768,
        "credential": bundle,
    }
    status, created = await api("POST", "servers", body=spec)
    assert status == 201, created
    assert "BEGIN" not in repr(created)
    assert created["credential"]["fingerprints"]["cert"].startswith("SHA256:")
    status, listed = await api("GET", "servers")
    assert [s["name"] for s in listed] == ["hs9"]
    status, patched = await api("PATCH", f"servers/{created['id']}", body={"region": "us"})
    assert (status, patched["region"]) == (200, "us")
    status, body = await api("POST", "servers", body=spec)
    assert status == 409
    status, body = await api("POST", "servers", body={"name": "x", "endpoint": "http://x"})
    assert status == 400 and "endpoint" in body["message"]
    status, _ = await api("DELETE", "servers/hs9")
    assert status == 204
    status, _ = await api("GET", "servers/hs9")
    assert status == 404


async def test_drain_undrain_and_pin_through_the_api(api, registry) -> None:  # type: ignore[no-untyped-def]
    for name in ("hs1", "hs2"):
        await api("POST", "servers", body={"name": name, "endpoint": f"unix:///run/{name}.sock"})
    registry.place("alice")
    status, drained = await api("POST", "servers/hs1/drain")
    assert (status, drained["state"]) == (200, "draining")
    assert registry.place("bob").server_name == "hs2"
    status, placements = await api("GET", "workspaces")
    assert {(p["user"], p["server"]) for p in placements} == {("alice", "hs1"), ("bob", "hs2")}
    status, filtered = await api("GET", "workspaces?server=hs2")
    assert [p["user"] for p in filtered] == ["bob"]

    status, body = await api("POST", "workspaces/bob//place", body={"server": "hs1"})
    assert status == 409 and "data stays on hs2" in body["message"]
    status, body = await api(
        "POST", "workspaces/bob//place", body={"server": "hs1", "confirm_data_loss": True}
    )
    assert status == 200 and body["placement"]["pinned_server"] == "hs1"
    assert registry.place("bob").server_name == "hs1"
    status, undrained = await api("POST", "servers/hs1/undrain")
    assert undrained["state"] == "active"
    status, decisions = await api("GET", "decisions?limit=5")
    assert decisions[0]["policy"] == "pin"


async def test_policy_settings_per_group(api, registry) -> None:  # type: ignore[no-untyped-def]
    for name, region in (("eu1", "eu"), ("us1", "us")):
        await api(
            "POST",
            "servers",
            body={"name": name, "endpoint": f"unix:///{name}.sock", "region": region},
        )
    status, policies = await api("GET", "policies")
    assert status == 200
    assert {"least-loaded", "round-robin", "region"} <= set(policies["available"])
    assert policies["default"]["policy"] == "least-loaded"
    status, body = await api("PUT", "policies", body={"policy": "best-fit"})
    assert status == 400 and "codeyard.placement_policies" in body["message"]
    status, body = await api("PUT", "policies", body={"policy": "region", "options": {"bogus": 1}})
    assert status == 400

    body = {"group": "berlin", "policy": "region", "options": {"group_regions": {"berlin": "eu"}}}
    status, policies = await api("PUT", "policies", body=body)
    assert policies["groups"]["berlin"]["source"] == "admin"
    assert registry.place("bea", groups=["berlin"]).server_name == "eu1"
    status, _ = await api("DELETE", "policies/berlin")
    assert status == 204
    _, policies = await api("GET", "policies")
    assert "berlin" not in policies["groups"]


async def test_confirm_move_off_a_dead_local_host(api, registry) -> None:  # type: ignore[no-untyped-def]
    from codeyard.placement.registry import NeedsConfirmation

    for name in ("hs1", "hs2"):
        await api("POST", "servers", body={"name": name, "endpoint": f"unix:///{name}.sock"})
    registry.place("alice")
    await api("PATCH", "servers/hs1", body={"state": "down"})
    _, [view] = await api("GET", "workspaces?user=alice")
    assert "data stays on hs1" in view["note"]
    with pytest.raises(NeedsConfirmation):
        registry.place("alice")
    status, _ = await api("POST", "workspaces/alice//confirm-move")
    assert status == 200
    assert registry.place("alice").server_name == "hs2"


async def test_pin_with_restart_restarts_through_the_hub(api, hub, registry) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    for name in ("hs1", "hs2"):
        await api(
            "POST",
            "servers",
            body={"name": name, "endpoint": f"unix:///{name}.sock", "storage_shared": True},
        )
    registry.place("dev1")
    hub.api("POST", "/users/dev1/server")
    try:
        for _ in range(100):
            if hub.api("GET", "/users/dev1")["servers"].get("", {}).get("ready"):
                break
            await asyncio.sleep(0.1)
        started = hub.api("GET", "/users/dev1")["servers"][""]["started"]
        status, body = await api(
            "POST", "workspaces/dev1//place", body={"server": "hs2", "restart": True}
        )
        assert status == 200, body
        assert body["restart"] == "restarted"
        assert body["placement"]["pinned_server"] == "hs2"
        for _ in range(100):
            server = hub.api("GET", "/users/dev1")["servers"].get("", {})
            if server.get("ready"):
                break
            await asyncio.sleep(0.1)
        assert server["started"] != started  # a new start, which is when the pin applies
    finally:
        hub.api("DELETE", "/users/dev1/server")
