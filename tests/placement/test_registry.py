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
