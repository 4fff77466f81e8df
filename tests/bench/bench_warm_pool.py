"""Warm-pool benchmark: spawn request to usable workspace, warm vs cold, same run (`make bench`).

"Usable" means what a user waits for: JupyterLab's `/lab` page loads through the proxy and
the Codeyard API (`codeyard/api/tree`) answers, both with the user's own token. Timing
starts at the spawn request (POST to the Hub's API). The Hub answers that POST only once the
server is up and its proxy route is in (JupyterHub waits up to `slow_spawn_timeout`, 10 s),
so a warm spawn needs no polling: `/lab` is asked right after the answer, and again every
50 ms only while it fails (a cold spawn over 10 s is answered 202 and then polled).

For every warm spawn the benchmark also splits the time into its steps, from the Hub's log
(the spawner's progress lines, JupyterHub's "took ... seconds to start" and "Adding user ...
to proxy"), the launcher's own timings in the claimed container's log (`claim timings`), and
this client's clock; all three read the same host clock. The medians are printed as "where a
warm spawn's time goes".

One project Hub on the local engine:

1. cold: pool size 0, `--spawns` workspaces started one after another (each a new user's);
2. warm: pool size `--pool`, the same number of spawns; before each, the benchmark waits
   until the pool holds a warm container again (the refill is background work, not part of
   a spawn), and says how long the refills took;
3. `--concurrent` cold starts at once, all ready through the proxy (pool size 0).

Prints p50/p95 of each, the warm/cold ratio against the target (warm p50 < 1 s) and the
machine's load average beside each figure: on a shared 2-core machine the figures move
with whatever else runs.

`--home-quota 10G` runs the same with each home its own file system of that size, as
`make up` sets it (docs/home-quota.md). The images are sparse (`home_quota_preallocate`
off), so the benchmark's 30 homes fit on the disk. Each cold spawn is then a workspace's
first start (its file system is made); each warm spawn starts that same workspace again,
with its home already made and mounted, as every start after the first is: the claim binds
the mounted home into the warm container's slot.

Usage: .venv/bin/python tests/bench/bench_warm_pool.py [--spawns 20] [--concurrent 10]
    [--home-quota 10G]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results import record
from support.hub import HubProcess, ensure_images, ensure_proxy
from support.hub_workspaces import registry_of
from support.mounts import unmount_all_under

READY_TIMEOUT = 600
STORAGE_LABEL = "codeyard.pool.storage"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def usable(
    hub: HubProcess, user: str, ws: str, headers: dict[str, str], t0: float, marks: dict[str, float]
) -> float:
    """Seconds from `t0` until /lab loads and codeyard/api/tree answers through the proxy;
    the wall-clock moments of both go into `marks`."""
    base = f"{hub.url}/user/{user}/{ws}"
    lab_ok = False
    while time.monotonic() - t0 < READY_TIMEOUT:
        try:
            if not lab_ok:
                r = requests.get(f"{base}/lab", headers=headers, timeout=10, allow_redirects=False)
                lab_ok = r.status_code == 200 and "jupyter-config-data" in r.text
                if lab_ok:
                    marks["lab"] = time.time()
            if lab_ok:
                r = requests.get(f"{base}/codeyard/api/tree", headers=headers, timeout=10)
                if r.status_code == 200:
                    marks["tree"] = time.time()
                    return time.monotonic() - t0
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{user}/{ws} not usable in {READY_TIMEOUT}s\n{hub.log_tail()}")


def spawn_usable(
    hub: HubProcess,
    user: str,
    ws: str,
    headers: dict[str, str],
    marks: dict[str, float] | None = None,
) -> float:
    marks = {} if marks is None else marks
    t0 = time.monotonic()
    marks["request"] = time.time()
    r = hub.api("POST", f"/users/{user}/servers/{ws}", json={"profile": "small"})
    marks["answered"] = time.time()
    assert r.status_code in (201, 202), r.text
    return usable(hub, user, ws, headers, t0, marks)


#: Hub log lines that mark a warm spawn's steps: (mark, text after the user's name).
HUB_MARKS = (
    ("start", "Placing workspace"),
    ("claim", "Claiming a warm workspace"),
    ("claim_answered", "Starting Jupyter server in the warm workspace"),
    ("server_up", "Jupyter server is up"),
    ("start_returned", "container up on"),
    ("hub_took", "seconds to start"),
    ("proxy_add", "to proxy"),
)
_HUB_LINE = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) [^\]]*\] (.*)$")


def hub_marks(hub: HubProcess, user: str, ws: str, since: float) -> dict[str, float]:
    """Wall-clock moments of the warm spawn's steps in the Hub's log, after `since`."""
    found: dict[str, float] = {}
    for line in hub.log_path.read_text(errors="replace").splitlines():
        m = _HUB_LINE.match(line)
        if not m or user not in m.group(2):
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if at < since - 0.01:
            continue
        for mark, text in HUB_MARKS:
            if (
                mark not in found
                and text in m.group(2)
                and (ws in m.group(2) or mark == "proxy_add")
            ):
                found[mark] = at
    return found


def launcher_marks(client: docker.APIClient, root: str) -> dict[str, float]:
    """The claimed container's own timings (the launcher's `claim timings` log line): when
    the claim came and when the server listened, wall clock, plus its start-up phases."""
    for c in client.containers(filters={"label": f"{STORAGE_LABEL}={root}"}):
        logs = client.logs(c["Id"]).decode("utf-8", "replace")
        for line in logs.splitlines():
            if line.startswith("codeyard-warm-launcher: claim timings "):
                data = json.loads(line.split("claim timings ", 1)[1])
                marks = {
                    "claimed": data["claimed_epoch"],
                    "listening": data["claimed_epoch"] + data.get("listening", 0.0),
                }
                for label, _start, took in data.get("spans", []):
                    marks[f"phase:{label}"] = took
                return marks
    return {}


#: The steps of a warm spawn, between two marks, as printed.
STEPS = (
    ("request", "start", "Hub: API request, tokens, DB, until spawner.start()"),
    ("start", "claim", "spawner: place, image check, home, old container"),
    ("claim", "claimed", "claim: registry row, home move or bind, env, claim call"),
    ("claimed", "listening", "container: claim to server listening"),
    ("listening", "claim_answered", "claim answer back at the Hub"),
    ("claim", "claim_answered", "  = the hand-over, 'Claiming' to its answer at the Hub"),
    ("claim_answered", "server_up", "spawner: first HTTP check of the server"),
    ("server_up", "start_returned", "spawner: registry 'started'"),
    ("start_returned", "hub_took", "Hub: its own HTTP wait, DB, events"),
    ("hub_took", "answered", "Hub: proxy route add, API answer"),
    ("answered", "lab", "client: /lab through the proxy (token checked at the Hub)"),
    ("lab", "tree", "client: codeyard/api/tree through the proxy"),
)


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


def print_steps(steps: list[dict[str, float]]) -> None:
    """The median of each step over the warm spawns that were claimed (not cold)."""
    claimed = [m for m in steps if "claim" in m]
    print(f"\nwhere a warm spawn's time goes (median of {len(claimed)} claimed spawns):")
    for a, b, what in STEPS:
        spans = [m[b] - m[a] for m in claimed if a in m and b in m]
        if spans:
            print(f"  {statistics.median(spans):6.3f}s  {what}")
    total = [m["tree"] - m["request"] for m in claimed]
    if total:
        print(
            f"  {statistics.median(total):6.3f}s  total (median of the sums, not a sum of medians)"
        )
    phases = sorted({k for m in claimed for k in m if k.startswith("phase:")})
    if phases:
        medians = {k: statistics.median([m[k] for m in claimed if k in m]) for k in phases}
        inside = ", ".join(f"{k.removeprefix('phase:')} {v:.3f}s" for k, v in medians.items())
        print(f"  inside the container after the claim: {inside}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spawns", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=10, help="0: skip the concurrent starts")
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--cold-spawns", type=int, help="cold spawns in a row (default: --spawns)")
    ap.add_argument(
        "--time-box",
        type=float,
        default=0,
        help="minutes; past them no further warm spawn starts and the figures say how many"
        " ran (a loaded shared machine can make refills take minutes); 0: no limit",
    )
    ap.add_argument(
        "--settled",
        action="store_true",
        help="before each warm spawn wait until the pool is full again, so no refill (a new"
        " container importing for seconds on one core) runs beside the spawn; default: wait"
        " only until one warm container is ready, as spawns in a row meet the pool",
    )
    ap.add_argument(
        "--home-quota",
        default="",
        help="each home its own file system of this size (e.g. 10G, as `make up` sets it),"
        " sparse; warm spawns then restart each user's cold workspace, whose home is made"
        " and mounted. Default: no quota",
    )
    ap.add_argument("--json", help="write raw results here")
    args = ap.parse_args()

    image = os.environ.get("CODEYARD_TEST_IMAGE") or ensure_images()
    client = docker.APIClient(base_url="unix:///var/run/docker.sock", version="1.41")
    tag = secrets.token_hex(3)
    n = args.spawns
    users = [f"wp{tag}u{i}" for i in range(max(n, args.concurrent))]
    report: dict[str, Any] = {"image": image, "home_quota": args.home_quota or "0"}
    state = Path(tempfile.mkdtemp(prefix="codeyard-bench-pool-"))
    site_config = ""
    if args.home_quota:
        site_config = (
            f"c.PlacementSpawner.home_quota = {args.home_quota!r}\n"
            "c.PlacementSpawner.home_quota_preallocate = False\n"
            'c.PlacementSpawner.home_quota_keep_free = "1G"\n'
        )
    # With a quota the warm spawns start the cold ones' workspaces again (home mounted).
    warm_ws = "cold" if args.home_quota else "warm"
    hub = HubProcess(
        state_dir=state, image=image, proxy_command=ensure_proxy(), site_config=site_config
    )
    hub.start()
    try:
        r = hub.api("POST", "/users", json={"usernames": users})
        assert r.status_code == 201, r.text
        headers = {u: {"Authorization": f"token {hub.token_for(u, note='bench')}"} for u in users}

        cold, cold_load = [], []
        started = time.monotonic()
        for u in users[: args.cold_spawns or n]:
            cold.append(spawn_usable(hub, u, "cold", headers[u]))
            cold_load.append(os.getloadavg()[0])
            print(f"  cold {len(cold):2}: {cold[-1]:.2f}s ({load()})", flush=True)
            stop(hub, u, "cold")
        print(
            f"cold  {len(cold)} in a row: p50 {pct(cold, 0.5):.2f}s p95 {pct(cold, 0.95):.2f}s"
            f" ({load()})"
        )

        registry_of(hub).update_server(local_host(hub), {"pool_size": args.pool})
        warm: list[float] = []
        warm_load: list[float] = []
        refills: list[float] = []
        steps: list[dict[str, float]] = []
        root = str(hub.state_dir / "homes")
        for u in users[:n]:
            if args.time_box and time.monotonic() - started > args.time_box * 60:
                print(f"  time box of {args.time_box:g} min reached after {len(warm)} warm spawns")
                break
            refills.append(wait_pool(hub, client, args.pool if args.settled else 1))
            marks: dict[str, float] = {}
            warm.append(spawn_usable(hub, u, warm_ws, headers[u], marks))
            warm_load.append(os.getloadavg()[0])
            marks.update(launcher_marks(client, root))
            marks.update(hub_marks(hub, u, warm_ws, marks["request"]))
            steps.append(marks)
            claimed = "claimed" if "claim" in marks else "NOT CLAIMED (cold)"
            print(f"  warm {len(warm):2}: {warm[-1]:.2f}s {claimed} ({load()})", flush=True)
            stop(hub, u, warm_ws)
        mode = "pool full before each" if args.settled else "one warm container ready before each"
        print(
            f"warm  {len(warm)} in a row ({mode}): p50 {pct(warm, 0.5):.2f}s"
            f" p95 {pct(warm, 0.95):.2f}s ({load()})"
        )
        registry_of(hub).update_server(local_host(hub), {"pool_size": 0})
        if args.concurrent:
            time.sleep(5)  # the pool's containers go before the cold starts

        c = args.concurrent
        before = load()
        t0 = time.monotonic()
        together: list[float] = []
        if c > 0:
            with ThreadPoolExecutor(c) as pool:
                together = list(
                    pool.map(lambda u: spawn_usable(hub, u, "many", headers[u]), users[:c])
                )
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
        quota = f"home quota {args.home_quota} (sparse)" if args.home_quota else "no home quota"
        print(f"{quota}; image {image}")
        print(f"{'':24} {'p50':>7} {'p95':>7} {'max':>7}   load avg (1 min) at the spawns")
        for name, values, loads in (("cold", cold, cold_load), ("warm", warm, warm_load)):
            print(
                f"{name + f' ({len(values)} in a row)':24} {pct(values, 0.5):>6.2f}s"
                f" {pct(values, 0.95):>6.2f}s {max(values):>6.2f}s"
                f"   {statistics.mean(loads):.1f} mean, {max(loads):.1f} max"
            )
        verdict = "meets" if statistics.median(warm) < 1.0 else "MISSES"
        print(f"warm/cold p50 ratio: {ratio:.3f}; warm p50 {verdict} the < 1 s target")
        print_steps(steps)
        report["warm_steps"] = steps
        warm_loads = f"load {statistics.mean(warm_load):.1f} mean at the warm spawns"
        with_quota = f", home quota {args.home_quota}" if args.home_quota else ""
        record(
            "bench_warm_pool",
            f"warm spawn to usable, p50 < 1 s ({len(warm)} in a row{with_quota})",
            statistics.median(warm),
            "s",
            baseline=statistics.median(cold),
            baseline_label="cold spawn p50, same run",
            met=statistics.median(warm) < 1.0,
            note=f"warm p95 {pct(warm, 0.95):.2f} s, cold p95 {pct(cold, 0.95):.2f} s;"
            f" {len(warm)} warm, {len(cold)} cold spawns; {warm_loads}",
        )
        print(f"refill wait before each warm spawn: p50 {pct(refills, 0.5):.1f}s (background)")
        if together:
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
        # The homes' loop mounts and the storage root's shared bind are the host's.
        unmount_all_under(state / "homes")
        shutil.rmtree(state, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
