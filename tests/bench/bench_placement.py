"""Placement decision time among 100 hosts (target: under 1 ms per decision).

Run: `.venv/bin/python tests/bench/bench_placement.py [--hosts 100] [--rounds 2000]`.
Prints the policy's decision time (it runs at every spawn, over every host, so it must stay
negligible beside the spawn itself) and, for scale, a whole `Registry.place()` on SQLite
(snapshot query + decision + writes + commit).
Exits 1 if a policy's median decision exceeds 1 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

from cryptography.fernet import Fernet
from results import record

from codeyard.placement.crypto import CredentialCipher
from codeyard.placement.database import open_db
from codeyard.placement.models import PlacementState
from codeyard.placement.policies import HostLoad, PlacementRequest, PolicyState, load_policy
from codeyard.placement.registry import Registry


def _hosts(n: int, rng: random.Random) -> list[HostLoad]:
    states = ["active"] * 8 + ["draining", "down"]
    return [
        HostLoad(
            id=i,
            name=f"host{i:03d}",
            state=rng.choice(states),
            region=f"r{i % 4}",
            max_workspaces=40,
            mem_capacity=65536,
            running=rng.randrange(0, 41),
            mem_reserved=rng.randrange(0, 65536),
        )
        for i in range(n)
    ]


def _stats(samples: list[float]) -> str:
    samples.sort()
    med = statistics.median(samples) * 1e6
    p99 = samples[int(len(samples) * 0.99) - 1] * 1e6
    return f"median {med:7.1f} µs   p99 {p99:7.1f} µs   max {samples[-1] * 1e6:7.1f} µs"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(5)
    hosts = _hosts(args.hosts, rng)
    ok = True
    print(f"decision among {args.hosts} hosts, {args.rounds} rounds each")
    for name, options in (
        ("least-loaded", {}),
        ("round-robin", {}),
        ("region", {"group_regions": {"g1": "r1", "g2": "r2"}}),
    ):
        policy, state = load_policy(name, **options), PolicyState()
        req = PlacementRequest("alice", groups=("g1",), mem_request=512)
        samples = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            policy.choose(hosts, req, state)
            samples.append(time.perf_counter() - t0)
        median = statistics.median(samples)
        ok &= median < 1e-3
        print(f"  {name:13s} {_stats(samples)}")
        record(
            "bench_placement",
            f"{name} decision, {args.hosts} hosts < 1 ms",
            median * 1e6,
            "us",
            None,
            "absolute",
            median < 1e-3,
        )

    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(
            open_db(f"sqlite:///{os.path.join(tmp, 'bench.sqlite')}"),
            CredentialCipher(Fernet.generate_key().decode()),
        )
        for h in hosts:
            registry.add_server(
                {
                    "name": h.name,
                    "endpoint": f"unix:///run/{h.name}.sock",
                    "max_workspaces": 1000,
                    "mem_capacity": 10**6,
                    "state": "active" if h.state == "active" else h.state,
                }
            )
        samples = []
        for i in range(min(args.rounds, 500)):
            t0 = time.perf_counter()
            registry.place(f"user{i:04d}", mem_request=512)
            samples.append(time.perf_counter() - t0)
            registry.mark(f"user{i:04d}", "", PlacementState.running)
        recorded = [d["duration_us"] for d in registry.decisions(limit=500)]
        print(f"  registry.place() end to end on SQLite: {_stats(samples)}")
        print(
            f"  decision time recorded in the DB:      median {statistics.median(recorded):7.1f} µs"
        )
    print("PASS" if ok else "FAIL: a policy's median decision is over 1 ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
