"""Placement policies: which registered host runs a workspace.

A policy is a class with a `name` and one method to override::

    class MyPolicy(PlacementPolicy):
        name = "my-policy"

        def choose(self, hosts, request, state) -> Choice:
            candidates = self.eligible(hosts, request)   # raises NoHostAvailable
            ...
            return Choice(host, "why this host")

`choose` is pure: it sees an in-memory snapshot (`HostLoad`) and must not do I/O, so a
decision among hundreds of hosts stays well under a millisecond. Policies are found by name
in the entry point group `codeyard.placement_policies` (the built-ins are registered there
too, and used directly when the package metadata lacks them).

Rules every policy keeps, enforced by `eligible`:
- draining, down and full hosts are never chosen;
- ties break deterministically (by load, then running count, then host name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

ENTRY_POINT_GROUP = "codeyard.placement_policies"


@dataclass(frozen=True, slots=True)
class HostLoad:
    """One host as a policy sees it: registry facts plus live load."""

    id: int
    name: str
    state: str = "active"
    region: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    max_workspaces: int = 0  # 0: no limit
    mem_capacity: int = 0  # MiB; 0: not limited by memory
    running: int = 0  # workspaces placed or running here
    mem_reserved: int = 0  # MiB reserved by those workspaces

    def is_full(self, mem_request: int = 0) -> bool:
        if self.max_workspaces and self.running >= self.max_workspaces:
            return True
        return bool(self.mem_capacity and self.mem_reserved + mem_request > self.mem_capacity)

    @property
    def load(self) -> float:
        """The larger of workspace and memory utilisation, 0..1 (0 when unlimited)."""
        ws = self.running / self.max_workspaces if self.max_workspaces else 0.0
        mem = self.mem_reserved / self.mem_capacity if self.mem_capacity else 0.0
        return max(ws, mem)

    def load_with(self, mem_request: int = 0) -> float:
        """`load` once a workspace reserving `mem_request` MiB is placed here: the request
        counts against this host's memory, so a small host fills before a big one."""
        ws = self.running / self.max_workspaces if self.max_workspaces else 0.0
        mem = (self.mem_reserved + mem_request) / self.mem_capacity if self.mem_capacity else 0.0
        return max(ws, mem)

    def sort_key(self, mem_request: int = 0) -> tuple[float, int, str]:
        return (self.load_with(mem_request), self.running, self.name)


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    user: str
    workspace: str = ""
    groups: tuple[str, ...] = ()
    mem_request: int = 0  # MiB

    @property
    def label(self) -> str:
        return f"{self.user}/{self.workspace}"


@dataclass(slots=True)
class PolicyState:
    """What a policy may remember between decisions (persisted by the registry)."""

    cursor: str = ""  # round-robin: the name of the last host chosen


@dataclass(frozen=True, slots=True)
class Choice:
    host: HostLoad
    reason: str


class NoHostAvailable(Exception):
    """No host can take the workspace; `str()` names why, for the spawn error."""


class PlacementPolicy:
    """Base class; see the module docstring for what a subclass overrides."""

    name: ClassVar[str] = ""
    # the options a policy understands; None accepts any (for policies that validate later)
    option_names: ClassVar[frozenset[str] | None] = None

    def __init__(self, **options: Any) -> None:
        if self.option_names is not None and (unknown := set(options) - self.option_names):
            known = ", ".join(sorted(self.option_names)) or "none"
            raise TypeError(f"unknown options {sorted(unknown)}; known: {known}")
        self.options = options

    def eligible(
        self, hosts: Sequence[HostLoad], request: PlacementRequest, scope: str = ""
    ) -> list[HostLoad]:
        """Active, non-full hosts; raises NoHostAvailable naming why there are none."""
        ok: list[HostLoad] = []
        down = draining = full = 0
        for h in hosts:
            if h.state == "down":
                down += 1
            elif h.state == "draining":
                draining += 1
            elif h.is_full(request.mem_request):
                full += 1
            else:
                ok.append(h)
        if ok:
            return ok
        where = f" in {scope}" if scope else ""
        if not hosts:
            raise NoHostAvailable(f"no host{where} is registered for {request.label}")
        n = len(hosts)
        every = f"the only host{where} is" if n == 1 else f"all {n} hosts{where} are"
        if full == n:
            why = f"{every} full"
        elif down == n:
            why = f"{every} down"
        elif draining == n:
            why = f"{every} draining"
        else:
            parts = [
                f"{c} {w}" for c, w in ((full, "full"), (down, "down"), (draining, "draining")) if c
            ]
            why = f"no host{where} can take it ({', '.join(parts)})"
        raise NoHostAvailable(f"cannot place {request.label}: {why}")

    def choose(
        self, hosts: Sequence[HostLoad], request: PlacementRequest, state: PolicyState
    ) -> Choice:
        raise NotImplementedError


def least_loaded(hosts: Sequence[HostLoad], request: PlacementRequest) -> HostLoad:
    """The host with the lowest load once `request` is placed on it (ties: running, name)."""
    return min(hosts, key=lambda h: h.sort_key(request.mem_request))


class LeastLoaded(PlacementPolicy):
    """The host with the lowest utilisation (workspaces and reserved memory vs capacity)."""

    name = "least-loaded"
    option_names = frozenset()

    def choose(
        self, hosts: Sequence[HostLoad], request: PlacementRequest, state: PolicyState
    ) -> Choice:
        best = least_loaded(self.eligible(hosts, request), request)
        return Choice(
            best,
            f"least-loaded: {best.name} at {best.load_with(request.mem_request):.0%} with this "
            f"workspace ({best.running} workspaces, {best.mem_reserved} MiB reserved"
            f" + {request.mem_request} MiB requested)",
        )


class RoundRobin(PlacementPolicy):
    """The next eligible host after the last one chosen, in host-name order."""

    name = "round-robin"
    option_names = frozenset()

    def choose(
        self, hosts: Sequence[HostLoad], request: PlacementRequest, state: PolicyState
    ) -> Choice:
        ordered = sorted(self.eligible(hosts, request), key=lambda h: h.name)
        previous = state.cursor
        nxt = next((h for h in ordered if h.name > previous), ordered[0])
        state.cursor = nxt.name
        after = f"after {previous!r}" if previous else "first in order"
        return Choice(nxt, f"round-robin: {nxt.name}, {after}")


class Region(PlacementPolicy):
    """Hosts in the region mapped to the user's group, least-loaded among them.

    Options:
    - `group_regions`: {group: region}. A user in several mapped groups gets the region of
      the first such group in alphabetical order.
    - `fallback`: for users in no mapped group: `"any"` (least-loaded over every host, the
      default), `"deny"` (refuse), or a region name.
    A mapped region with no eligible host is an error naming the region; it never spills
    into another region, because region usually means data residency.
    """

    name = "region"
    option_names = frozenset({"group_regions", "fallback"})

    def choose(
        self, hosts: Sequence[HostLoad], request: PlacementRequest, state: PolicyState
    ) -> Choice:
        mapping: Mapping[str, str] = self.options.get("group_regions", {})
        fallback: str = self.options.get("fallback", "any")
        region, why = None, ""
        for group in sorted(request.groups):
            if group in mapping:
                region, why = mapping[group], f"group {group!r} maps to region"
                break
        if region is None:
            if fallback == "deny":
                raise NoHostAvailable(
                    f"cannot place {request.label}: none of the user's groups maps to a "
                    "region and the region fallback is 'deny'"
                )
            if fallback == "any":
                best = least_loaded(self.eligible(hosts, request), request)
                return Choice(best, f"region: no group mapped, fallback 'any': {best.name}")
            region, why = fallback, "fallback region"
        in_region = [h for h in hosts if h.region == region]
        best = least_loaded(self.eligible(in_region, request, scope=f"region {region!r}"), request)
        return Choice(best, f"region: {why} {region!r}; least-loaded there is {best.name}")


BUILTIN_POLICIES: dict[str, type[PlacementPolicy]] = {
    p.name: p for p in (LeastLoaded, RoundRobin, Region)
}


def available_policies() -> dict[str, type[PlacementPolicy]]:
    """Every policy by name: the built-ins, then the entry point group (which may replace them)."""
    found: dict[str, type[PlacementPolicy]] = dict(BUILTIN_POLICIES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def load_policy(name: str, **options: Any) -> PlacementPolicy:
    policies = available_policies()
    if name not in policies:
        raise KeyError(
            f"unknown placement policy {name!r}; known: {', '.join(sorted(policies))} "
            f"(add more through the {ENTRY_POINT_GROUP!r} entry point group)"
        )
    return policies[name](**options)
