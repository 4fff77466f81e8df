"""Warm-pool benchmark: spawn request to usable workspace, warm vs cold, same run (`make bench`).

"Usable" means what a user waits for: JupyterLab's `/lab` page loads through the proxy and
the Codeyard API (`codeyard/api/tree`) answers, both with the user's own token. Timing
starts at the spawn request (POST to the Hub's API) and is polled every 50 ms.

One project Hub on the local engine:

1. cold: pool size 0, `--spawns` workspaces started one after another (each a new user's);
2. warm: pool size `--pool`, the same number of spawns; before each, the benchmark waits
   until the pool holds a warm container again (the refill is background work, not part of
   a spawn), and says how long the refills took;
3. `--concurrent` cold starts at once, all ready through the proxy (pool size 0).

Prints p50/p95 of each, the warm/cold ratio against the target (warm p50 < 1 s) and the
machine's load average beside each figure: on a shared 2-core machine the figures move
with whatever else runs.

Usage: .venv/bin/python tests/bench/bench_warm_pool.py [--spawns 20] [--concurrent 10]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.hub import HubProcess, ensure_images, ensure_proxy
from support.hub_workspaces import registry_of

READY_TIMEOUT = 600
STORAGE_LABEL = "codeyard.pool.storage"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def usable(hub: HubProcess, user: str, ws: str, headers: dict[str, str], t0: float) -> float:
    """Seconds from `t0` until /lab loads and codeyard/api/tree answers through the proxy."""
    base = f"{hub.url}/user/{user}/{ws}"
    lab_ok = False
    while time.monotonic() - t0 < READY_TIMEOUT:
        try:
            if not lab_ok:
                r = requests.get(f"{base}/lab", headers=headers, timeout=10, allow_redirects=False)
                lab_ok = r.status_code == 200 and "jupyter-config-data" in r.text
            if lab_ok:
                r = requests.get(f"{base}/codeyard/api/tree", headers=headers, timeout=10)
                if r.status_code == 200:
                    return time.monotonic() - t0
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{user}/{ws} not usable in {READY_TIMEOUT}s\n{hub.log_tail()}")


def spawn_usable(hub: HubProcess, user: str, ws: str, headers: dict[str, str]) -> float:
    t0 = time.monotonic()
    r = hub.api("POST", f"/users/{user}/servers/{ws}", json={"profile": "small"})
    assert r.status_code in (201, 202), r.text
    return usable(hub, user, ws, headers, t0)


def stop(hub: HubProcess, user: str, ws: str) -> None:
    hub.api("DELETE", f"/users/{user}/servers/{ws}")
    deadline = time.monotonic() + 120
    while ws in hub.api("GET", f"/users/{user}").json()["servers"]:
        if time.monotonic() > deadline:
            raise TimeoutError(hub.log_tail())
        time.sleep(0.2)


def local_host(hub: HubProcess) -> str:
    return str(registry_of(hub).list_servers()[0]["name"])


def wait_pool(hub: HubProcess, client: docker.APIClient, n: int) -> float:
    """Seconds until `n` warm containers wait for a claim."""
    t0 = time.monotonic()
    root = str(hub.state_dir / "homes")
    while time.monotonic() - t0 < READY_TIMEOUT:
        pooled = registry_of(hub).get_server(local_host(hub))["load"]["pooled"]
        waiting = [
            c
            for c in client.containers(filters={"label": f"{STORAGE_LABEL}={root}"})
            if "codeyard.pool" in c["Labels"] and b"waiting for a claim" in client.logs(c["Id"])
        ]
        if pooled >= n and len(waiting) >= n:
            time.sleep(0.6)  # the Hub's own readiness probe (every 0.3 s)
            return time.monotonic() - t0
        time.sleep(0.2)
    raise TimeoutError(f"the pool never reached {n}\n{hub.log_tail()}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spawns", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=10)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--json", help="write raw results here")
    args = ap.parse_args()

    image = os.environ.get("CODEYARD_TEST_IMAGE") or ensure_images()
    client = docker.APIClient(base_url="unix:///var/run/docker.sock", version="1.41")
    tag = secrets.token_hex(3)
    n = args.spawns
    users = [f"wp{tag}u{i}" for i in range(max(n, args.concurrent))]
    report: dict[str, Any] = {"image": image}
    state = Path(tempfile.mkdtemp(prefix="codeyard-bench-pool-"))
    hub = HubProcess(state_dir=state, image=image, proxy_command=ensure_proxy())
    hub.start()
    try:
        r = hub.api("POST", "/users", json={"usernames": users})
        assert r.status_code == 201, r.text
        headers = {u: {"Authorization": f"token {hub.token_for(u, note='bench')}"} for u in users}

        cold, cold_load = [], []
        for u in users[:n]:
            cold.append(spawn_usable(hub, u, "cold", headers[u]))
            cold_load.append(os.getloadavg()[0])
            print(f"  cold {len(cold):2}: {cold[-1]:.2f}s ({load()})", flush=True)
            stop(hub, u, "cold")
        print(
            f"cold  {n} in a row: p50 {pct(cold, 0.5):.2f}s p95 {pct(cold, 0.95):.2f}s ({load()})"
        )

        registry_of(hub).update_server(local_host(hub), {"pool_size": args.pool})
        warm, warm_load, refills = [], [], []
        for u in users[:n]:
            refills.append(wait_pool(hub, client, 1))
            warm.append(spawn_usable(hub, u, "warm", headers[u]))
            warm_load.append(os.getloadavg()[0])
            print(f"  warm {len(warm):2}: {warm[-1]:.2f}s ({load()})", flush=True)
            stop(hub, u, "warm")
        print(
            f"warm  {n} in a row: p50 {pct(warm, 0.5):.2f}s p95 {pct(warm, 0.95):.2f}s ({load()})"
        )
        registry_of(hub).update_server(local_host(hub), {"pool_size": 0})
        time.sleep(5)

        c = args.concurrent
        before = load()
        t0 = time.monotonic()
        with ThreadPoolExecutor(c) as pool:
            together = list(pool.map(lambda u: spawn_usable(hub, u, "many", headers[u]), users[:c]))
        wall = time.monotonic() - t0
        after = load()
        for u in users[:c]:
            stop(hub, u, "many")

        report.update(
            cold=cold,
            warm=warm,
            refill_waits=refills,
            concurrent=together,
            concurrent_wall=wall,
            cold_load=cold_load,
            warm_load=warm_load,
        )
        ratio = statistics.median(warm) / statistics.median(cold)
        print()
        print(f"{'':24} {'p50':>7} {'p95':>7} {'max':>7}   load avg (1 min) at the spawns")
        for name, values, loads in (("cold", cold, cold_load), ("warm", warm, warm_load)):
            print(
                f"{name + f' ({n} in a row)':24} {pct(values, 0.5):>6.2f}s"
                f" {pct(values, 0.95):>6.2f}s {max(values):>6.2f}s"
                f"   {statistics.mean(loads):.1f} mean, {max(loads):.1f} max"
            )
        verdict = "meets" if statistics.median(warm) < 1.0 else "MISSES"
        print(f"warm/cold p50 ratio: {ratio:.3f}; warm p50 {verdict} the < 1 s target")
        print(f"refill wait before each warm spawn: p50 {pct(refills, 0.5):.1f}s (background)")
        verdict = "meets" if wall <= 30 else "MISSES"
        print(
            f"{c} concurrent cold starts, all usable through the proxy: {wall:.1f}s wall,"
            f" slowest {max(together):.1f}s, p50 {pct(together, 0.5):.1f}s;"
            f" {verdict} the <= 30 s target ({before} before, {after} after)"
        )
    finally:
        hub.stop()
        for u in users:
            for c in client.containers(all=True, filters={"label": f"codeyard.user={u}"}):
                client.remove_container(c["Id"], force=True)
        root = str(state / "homes")
        for c in client.containers(all=True, filters={"label": f"{STORAGE_LABEL}={root}"}):
            client.remove_container(c["Id"], force=True)
        shutil.rmtree(state, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
