"""Policies choose correctly; draining, down and full hosts are never chosen; ties are stable."""

from __future__ import annotations

from collections import Counter

import pytest

from codeyard.placement.policies import (
    HostLoad,
    LeastLoaded,
    NoHostAvailable,
    PlacementRequest,
    PolicyState,
    Region,
    RoundRobin,
    load_policy,
)
from codeyard.placement.registry import Registry


def _hosts(*specs: dict) -> list[HostLoad]:
    return [HostLoad(id=i, **s) for i, s in enumerate(specs, 1)]


REQ = PlacementRequest("alice")


def test_least_loaded_picks_lowest_utilisation() -> None:
    hosts = _hosts(
        {"name": "a", "max_workspaces": 10, "running": 5},
        {
            "name": "b",
            "max_workspaces": 10,
            "running": 2,
            "mem_capacity": 1000,
            "mem_reserved": 900,
        },
        {"name": "c", "max_workspaces": 10, "running": 3},
    )
    choice = LeastLoaded().choose(hosts, REQ, PolicyState())
    assert choice.host.name == "c"
    assert "least-loaded" in choice.reason


def test_ties_break_by_name_whatever_the_input_order() -> None:
    hosts = _hosts({"name": "b"}, {"name": "c"}, {"name": "a"})
    for order in (hosts, hosts[::-1], hosts[1:] + hosts[:1]):
        assert LeastLoaded().choose(order, REQ, PolicyState()).host.name == "a"


@pytest.mark.parametrize("policy", [LeastLoaded(), RoundRobin(), Region(fallback="any")])
def test_draining_down_and_full_are_never_chosen(policy) -> None:  # type: ignore[no-untyped-def]
    hosts = _hosts(
        {"name": "a-draining", "state": "draining"},
        {"name": "b-down", "state": "down"},
        {"name": "c-full", "max_workspaces": 2, "running": 2},
        {"name": "d-mem-full", "mem_capacity": 1024, "mem_reserved": 1000},
        {"name": "z-ok", "max_workspaces": 100, "running": 99},
    )
    state = PolicyState()
    req = PlacementRequest("bob", mem_request=100)
    for _ in range(5):
        assert policy.choose(hosts, req, state).host.name == "z-ok"


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([{"name": "a", "max_workspaces": 1, "running": 1}] * 3, "all 3 hosts are full"),
        ([{"name": "a", "state": "down"}] * 2, "all 2 hosts are down"),
        ([{"name": "a", "state": "draining"}], "the only host is draining"),
        (
            [{"name": "a", "state": "down"}, {"name": "b", "max_workspaces": 1, "running": 1}],
            "no host can take it (1 full, 1 down)",
        ),
        ([], "no host is registered"),
    ],
)
def test_no_host_error_names_why(specs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NoHostAvailable, match=message.replace("(", r"\(").replace(")", r"\)")):
        LeastLoaded().choose(_hosts(*specs), REQ, PolicyState())


def test_round_robin_cycles_in_name_order_skipping_ineligible() -> None:
    hosts = _hosts({"name": "c"}, {"name": "a"}, {"name": "b", "state": "draining"}, {"name": "d"})
    state = PolicyState()
    picks = [RoundRobin().choose(hosts, REQ, state).host.name for _ in range(7)]
    assert picks == ["a", "c", "d", "a", "c", "d", "a"]


def test_region_maps_groups_and_never_spills() -> None:
    hosts = _hosts(
        {"name": "eu1", "region": "eu", "running": 3},
        {"name": "eu2", "region": "eu", "running": 1},
        {"name": "us1", "region": "us"},
    )
    policy = Region(group_regions={"berlin": "eu", "boston": "us"}, fallback="us")
    eu = PlacementRequest("alice", groups=("zeta", "berlin"))
    assert policy.choose(hosts, eu, PolicyState()).host.name == "eu2"
    assert (
        policy.choose(hosts, PlacementRequest("x", groups=("none",)), PolicyState()).host.name
        == "us1"
    )

    eu_down = _hosts(
        {"name": "eu1", "region": "eu", "state": "down"},
        {"name": "us1", "region": "us"},
    )
    with pytest.raises(NoHostAvailable, match="the only host in region 'eu' is down"):
        policy.choose(eu_down, eu, PolicyState())
    with pytest.raises(NoHostAvailable, match="no host in region 'asia'"):
        Region(group_regions={"tokyo": "asia"}).choose(
            hosts, PlacementRequest("k", groups=("tokyo",)), PolicyState()
        )
    with pytest.raises(NoHostAvailable, match="fallback is 'deny'"):
        Region(group_regions={}, fallback="deny").choose(hosts, REQ, PolicyState())


def test_region_user_in_two_mapped_groups_gets_the_first_alphabetically() -> None:
    hosts = _hosts({"name": "eu1", "region": "eu"}, {"name": "us1", "region": "us"})
    policy = Region(group_regions={"b-team": "us", "a-team": "eu"})
    req = PlacementRequest("u", groups=("b-team", "a-team"))
    assert policy.choose(hosts, req, PolicyState()).host.name == "eu1"


def test_unknown_policy_names_the_entry_point_group() -> None:
    with pytest.raises(KeyError, match=r"codeyard\.placement_policies"):
        load_policy("best-fit")


# ---- through the registry: recorded decisions, per-group override -----------------------


def _unix_hosts(registry: Registry, specs: dict[str, dict]) -> None:
    for name, spec in specs.items():
        registry.add_server({"name": name, "endpoint": f"unix:///run/{name}.sock", **spec})


def test_least_loaded_spreads_twelve_users_evenly_over_three_hosts(registry: Registry) -> None:
    _unix_hosts(registry, {n: {"max_workspaces": 10} for n in ("hs1", "hs2", "hs3")})
    placed = [registry.place(f"user{i:02d}").server_name for i in range(12)]
    assert Counter(placed) == {"hs1": 4, "hs2": 4, "hs3": 4}
    assert placed[:3] == ["hs1", "hs2", "hs3"]


def test_round_robin_is_remembered_between_decisions(registry: Registry) -> None:
    _unix_hosts(registry, {n: {} for n in ("hs1", "hs2", "hs3")})
    registry.set_policy("round-robin")
    placed = [registry.place(f"user{i:02d}").server_name for i in range(6)]
    assert placed == ["hs1", "hs2", "hs3", "hs1", "hs2", "hs3"]


def test_group_override_and_recorded_reasons(registry: Registry) -> None:
    _unix_hosts(
        registry,
        {"eu1": {"region": "eu"}, "eu2": {"region": "eu"}, "us1": {"region": "us"}},
    )
    registry.set_policy("region", group="berlin", options={"group_regions": {"berlin": "eu"}})
    regional = {registry.place(f"b{i}", groups=["berlin"]).server_name for i in range(6)}
    assert regional == {"eu1", "eu2"}
    assert registry.place("carol", groups=["other"]).server_name == "us1"  # default: least-loaded
    reasons = registry.decisions()
    assert reasons[0]["policy"] == "least-loaded" and reasons[0]["server"] == "us1"
    assert "group 'berlin' maps to region 'eu'" in reasons[1]["reason"]
    assert all(d["duration_us"] < 1000 for d in reasons)


def test_failed_decision_is_recorded_with_its_reason(registry: Registry) -> None:
    _unix_hosts(registry, {"hs1": {"max_workspaces": 1}})
    registry.place("a")
    with pytest.raises(NoHostAvailable, match="the only host is full"):
        registry.place("b")
    assert registry.decisions()[0]["server"] is None
    assert "full" in registry.decisions()[0]["reason"]
