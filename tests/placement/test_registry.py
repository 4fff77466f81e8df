"""Registry rules: sticky placement, drain, pins, and failover off down hosts."""

from __future__ import annotations

import pytest

from codeyard.placement.models import PlacementState, ServerState
from codeyard.placement.registry import Conflict, NeedsConfirmation, NotFound, Registry


def _add(registry: Registry, name: str, **spec) -> int:  # type: ignore[no-untyped-def]
    return registry.add_server({"name": name, "endpoint": f"unix:///run/{name}.sock", **spec})["id"]


def test_crud_and_validation(registry: Registry) -> None:
    sid = _add(registry, "hs1", region="eu", labels={"gpu": "no"}, max_workspaces=5)
    assert registry.get_server(sid)["region"] == "eu"
    assert registry.update_server(sid, {"region": "us"})["region"] == "us"
    with pytest.raises(Conflict):
        _add(registry, "hs1")
    with pytest.raises(Exception, match="unknown field"):
        registry.update_server(sid, {"password": "x"})
    with pytest.raises(Exception, match="endpoint"):
        registry.update_server(sid, {"endpoint": "http://x"})
    registry.place("alice")
    with pytest.raises(Conflict, match="drain it first"):
        registry.delete_server(sid)
    registry.mark("alice", "", PlacementState.stopped)
    registry.delete_server(sid)
    with pytest.raises(NotFound):
        registry.get_server(sid)


def test_workspace_stays_on_its_host(registry: Registry) -> None:
    _add(registry, "hs1")
    _add(registry, "hs2")
    first = registry.place("alice").server_name
    for _ in range(3):
        registry.place(f"filler{_}")
    assert registry.place("alice").server_name == first


def test_drain_avoids_host_for_new_spawns_but_running_stay(registry: Registry) -> None:
    hs1 = _add(registry, "hs1", storage_shared=True)
    _add(registry, "hs2", storage_shared=True)
    assert registry.place("alice").server_name == "hs1"
    registry.mark("alice", "", PlacementState.running)
    registry.set_state(hs1, ServerState.draining)
    assert {registry.place(f"new{i}").server_name for i in range(4)} == {"hs2"}
    assert registry.get_placement("alice")["server"] == "hs1"  # running: untouched
    # its next start (shared storage) moves it off the draining host
    moved = registry.place("alice")
    assert (moved.server_name, moved.moved_from) == ("hs2", "hs1")
    registry.set_state(hs1, ServerState.active)
    assert registry.place("fresh").server_name == "hs1"


def test_draining_host_with_local_storage_keeps_its_workspaces(registry: Registry) -> None:
    hs1 = _add(registry, "hs1")
    _add(registry, "hs2")
    registry.place("alice")
    registry.set_state(hs1, ServerState.draining)
    assert registry.place("alice").server_name == "hs1"


def test_down_host_with_shared_storage_moves_at_next_start(registry: Registry) -> None:
    hs1 = _add(registry, "hs1", storage_shared=True)
    _add(registry, "hs2", storage_shared=True)
    registry.place("alice")
    registry.set_state(hs1, ServerState.down)
    assert "home survives" in registry.get_placement("alice")["note"]
    result = registry.place("alice")
    assert (result.server_name, result.moved_from) == ("hs2", "hs1")
    assert "moved from hs1 (down)" in result.reason


def test_down_host_with_local_storage_needs_confirmation(registry: Registry) -> None:
    hs1 = _add(registry, "hs1")
    _add(registry, "hs2")
    registry.place("alice")
    registry.set_state(hs1, ServerState.down)
    assert "data stays on hs1" in registry.get_placement("alice")["note"]
    with pytest.raises(NeedsConfirmation, match="data stays on hs1"):
        registry.place("alice")
    registry.confirm_replacement("alice", "")
    assert registry.place("alice").server_name == "hs2"


def test_pin_applies_at_next_start(registry: Registry) -> None:
    _add(registry, "hs1", storage_shared=True)
    hs2 = _add(registry, "hs2", storage_shared=True)
    assert registry.place("alice").server_name == "hs1"
    view = registry.pin("alice", "", hs2, restart=True)
    assert (view["server"], view["pinned_server"], view["restart_requested"]) == (
        "hs1",
        "hs2",
        True,
    )
    result = registry.place("alice")
    assert result.server_name == "hs2" and "pinned" in result.reason
    after = registry.get_placement("alice")
    assert after["pinned_server"] is None and after["restart_requested"] is False


def test_pin_off_local_storage_needs_confirmation(registry: Registry) -> None:
    _add(registry, "hs1")
    hs2 = _add(registry, "hs2")
    registry.place("alice")
    with pytest.raises(NeedsConfirmation):
        registry.pin("alice", "", hs2)
    registry.pin("alice", "", hs2, confirm_data_loss=True)
    assert registry.place("alice").server_name == "hs2"


def test_health_threshold_marks_down_and_recovery_marks_active(registry: Registry) -> None:
    sid = _add(registry, "hs1")
    registry.settings.failure_threshold = 3
    assert registry.record_probe(sid, {"ok": False, "error": "refused"}, details=False) == "active"
    assert registry.record_probe(sid, {"ok": False, "error": "refused"}, details=False) == "active"
    assert registry.record_probe(sid, {"ok": False, "error": "refused"}, details=False) == "down"
    assert registry.get_server(sid)["last_test"]["error"] == "refused"
    assert registry.record_probe(sid, {"ok": True}, details=False) == "active"
    assert registry.get_server(sid)["last_seen"] is not None


def test_a_draining_host_that_dies_is_marked_down_and_returns_draining(
    registry: Registry,
) -> None:
    sid = _add(registry, "hs1", storage_shared=True)
    _add(registry, "hs2", storage_shared=True)
    registry.settings.failure_threshold = 2
    registry.place("alice")
    registry.set_state(sid, ServerState.draining)
    fail = {"ok": False, "error": "refused"}
    assert [registry.record_probe(sid, fail, details=False) for _ in range(2)] == [
        "draining",
        "down",
    ]
    view = registry.get_server(sid)
    assert (view["state"], view["drain_requested"]) == ("down", True)
    assert "home survives" in registry.get_placement("alice")["note"]  # down, not draining
    # drain/undrain on a down host change only the intent; it stays down
    assert registry.set_state(sid, ServerState.active)["state"] == "down"
    assert registry.set_state(sid, ServerState.draining)["state"] == "down"
    # it answers again: draining, as the admin left it, and takes no new workspaces
    assert registry.record_probe(sid, {"ok": True}, details=False) == "draining"
    assert registry.place("bob").server_name == "hs2"
    undrained = registry.set_state(sid, ServerState.active)
    assert (undrained["state"], undrained["drain_requested"]) == ("active", False)
    # without the intent, a dead host comes back active
    for _ in range(2):
        registry.record_probe(sid, fail, details=False)
    assert registry.set_state(sid, ServerState.active)["state"] == "down"
    assert registry.record_probe(sid, {"ok": True}, details=False) == "active"


def test_least_loaded_reserves_the_requested_memory_on_the_first_placement(
    registry: Registry,
) -> None:
    # equal and empty: without counting the request, the name would decide (a-small)
    _add(registry, "b-big", mem_capacity=16384)
    _add(registry, "a-small", mem_capacity=4096)
    first = registry.place("alice", mem_request=2048)
    assert first.server_name == "b-big"
    assert "+ 2048 MiB requested" in first.reason
    assert registry.get_server("b-big")["load"]["mem_reserved"] == 2048
    # a-small would be at 50% with 2048 MiB, b-big at 25%: still b-big
    assert registry.place("bob", mem_request=2048).server_name == "b-big"
    # a request that does not fit the small host never goes there
    assert registry.place("cy", mem_request=6000).server_name == "b-big"


def test_a_workspace_from_before_the_registry_is_adopted_on_its_saved_host(
    registry: Registry,
) -> None:
    """The spawner's state names a host but the registry never placed the workspace (it was
    made under LocalHostProvider): it stays there, though least-loaded would pick another."""
    _add(registry, "busy")
    _add(registry, "idle")
    for i in range(3):
        registry.place(f"filler{i}", known_host="busy")
        registry.mark(f"filler{i}", "", PlacementState.running)
    assert registry.place("new").server_name == "idle"  # the policy's own choice
    adopted = registry.place("old", known_host="busy")
    assert (adopted.server_name, adopted.moved_from) == ("busy", None)
    assert "stays on busy" in adopted.reason
    # Only while unplaced: once placed, the registry's record wins over the spawner's.
    assert registry.place("new", known_host="busy").server_name == "idle"
    # An unknown saved host is no host: the policy decides.
    assert registry.place("gone", known_host="nowhere").server_name in {"busy", "idle"}
