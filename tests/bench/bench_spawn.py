"""Spawn benchmark: time to ready through the Hub API vs a bare `docker run` (`make bench`).

For each concurrency level (default 1 and 10) it starts that many workspaces at once
through the Hub's REST API and measures request -> server ready (the Hub marks a server
ready only once it answers through its route). The same run starts the same number of
bare `docker run`s of the same image, each timed until jupyter-server answers `GET /api`.
Memory per workspace is read from each container's cgroup (usage minus inactive file cache)
5 s after the largest level is up, before any browser has loaded JupyterLab: a start-up
figure, not issue 12's idle memory (bench_workspace_cost measures that).

Usage: .venv/bin/python tests/bench/bench_spawn.py [--levels 1,10,20] [--json out.json]
Prints a table and, with --json, writes the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import requests

# A script's own folder is on sys.path, tests/ is not: add it for `support`, as pytest's
# `pythonpath` does for the suites.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results import record
from support.hub import HubProcess, ensure_images, ensure_proxy

READY_TIMEOUT = 600


def hub_spawn(hub: HubProcess, user: str, ws: str) -> dict[str, Any]:
    """POST the spawn, then follow its progress stream to the Hub's "ready" event.

    The stream is pushed by the Hub, so measuring adds no polling load to the Hub.
    """
    t0 = time.monotonic()
    r = hub.api("POST", f"/users/{user}/servers/{ws}", json={"profile": "small"})
    if r.status_code not in (201, 202):
        return {"ok": False, "error": f"{r.status_code} {r.text[:200]}"}
    if r.status_code == 201:
        return {"ok": True, "seconds": time.monotonic() - t0}
    with requests.get(
        f"{hub.url}/hub/api/users/{user}/servers/{ws}/progress",
        headers={"Authorization": f"token {hub.admin_token}"},
        stream=True,
        timeout=READY_TIMEOUT,
    ) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event.get("ready"):
                return {"ok": True, "seconds": time.monotonic() - t0}
            if event.get("failed"):
                return {"ok": False, "error": event.get("message", "failed")}
    return {"ok": False, "error": "progress stream ended without ready"}


def hub_delete(hub: HubProcess, user: str, ws: str) -> None:
    hub.api("DELETE", f"/users/{user}/servers/{ws}", json={"remove": True})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ws not in hub.api("GET", f"/users/{user}").json()["servers"]:
            return
        time.sleep(0.5)


def bare_run(client: docker.APIClient, image: str, tag: str) -> dict[str, Any]:
    t0 = time.monotonic()
    c = client.create_container(
        image,
        command=["jupyter", "server", "--ip=0.0.0.0", "--port=8888", "--no-browser"],
        ports=[8888],
        labels={"codeyard.bench": tag},
        host_config=client.create_host_config(
            port_bindings={8888: ("127.0.0.1",)},
            sysctls={"net.ipv6.conf.lo.disable_ipv6": "0"},
        ),
    )
    client.start(c["Id"])
    port = int(client.port(c["Id"], 8888)[0]["HostPort"])
    while time.monotonic() - t0 < READY_TIMEOUT:
        try:
            if requests.get(f"http://127.0.0.1:{port}/api", timeout=2).status_code == 200:
                return {"ok": True, "seconds": time.monotonic() - t0, "id": c["Id"]}
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return {"ok": False, "error": "timeout", "id": c["Id"]}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["seconds"] for r in results if r["ok"]]
    return {
        "n": len(results),
        "failed": sum(not r["ok"] for r in results),
        "p50": statistics.median(times) if times else None,
        "max": max(times) if times else None,
        "errors": [r["error"] for r in results if not r["ok"]][:5],
    }


def memory_mib(client: docker.APIClient, ids: list[str]) -> list[float]:
    out = []
    for cid in ids:
        mem = client.stats(cid, stream=False)["memory_stats"]
        stats = mem.get("stats", {})
        # minus inactive file cache only, as issue 12 defines a workspace's memory: active
        # file pages (the server's own imports) are part of what it holds
        inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
        out.append((mem["usage"] - inactive) / 2**20)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,10", help="comma-separated concurrency levels")
    ap.add_argument("--json", help="write raw results here")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    image = ensure_images()
    client = docker.APIClient(base_url="unix:///var/run/docker.sock", version="1.41")
    tag = secrets.token_hex(3)
    report: dict[str, Any] = {"image": image, "levels": {}}
    with tempfile.TemporaryDirectory(prefix="codeyard-bench-") as state:
        hub = HubProcess(state_dir=Path(state), image=image, proxy_command=ensure_proxy())
        hub.start()
        users = [f"bench{tag}u{i}" for i in range(max(levels))]
        try:
            r = hub.api("POST", "/users", json={"usernames": users})
            assert r.status_code == 201, r.text
            for level in levels:
                # Hub spawns: one workspace per user, all at once.
                ws = f"w{level}"
                with ThreadPoolExecutor(level) as pool:
                    hub_res = list(pool.map(hub_spawn, [hub] * level, users[:level], [ws] * level))
                mem = []
                if level == max(levels):
                    time.sleep(5)  # let start-up garbage settle
                    ids = [
                        c["Id"]
                        for c in client.containers(filters={"label": "codeyard.workspace=" + ws})
                        if c["Labels"].get("codeyard.user", "").startswith(f"bench{tag}")
                    ]
                    mem = memory_mib(client, ids)
                with ThreadPoolExecutor(level) as pool:
                    list(pool.map(hub_delete, [hub] * level, users[:level], [ws] * level))
                # Bare docker run of the same image, same concurrency.
                with ThreadPoolExecutor(level) as pool:
                    bare_res = list(pool.map(lambda _: bare_run(client, image, tag), range(level)))
                for b in bare_res:
                    client.remove_container(b["id"], force=True)
                report["levels"][level] = {
                    "hub": summarize(hub_res),
                    "bare": summarize(bare_res),
                    "memory_mib": {
                        "mean": statistics.mean(mem) if mem else None,
                        "max": max(mem) if mem else None,
                    },
                }
                time.sleep(3)
        finally:
            hub.stop()
            for c in client.containers(all=True, filters={"label": f"codeyard.bench={tag}"}):
                client.remove_container(c["Id"], force=True)
            for u in users:
                for c in client.containers(all=True, filters={"label": f"codeyard.user={u}"}):
                    client.remove_container(c["Id"], force=True)
            import shutil

            shutil.rmtree(Path(state) / "homes", ignore_errors=True)

    print(
        f"{'level':>5} {'hub p50':>8} {'hub max':>8} {'bare p50':>9} {'bare max':>9} "
        f"{'ratio':>6} {'failed':>7} {'MiB/ws':>7}"
    )
    for level, row in report["levels"].items():
        h, b, m = row["hub"], row["bare"], row["memory_mib"]
        ratio = h["p50"] / b["p50"] if h["p50"] and b["p50"] else float("nan")
        mem = f"{m['mean']:.0f}" if m["mean"] else "-"
        print(
            f"{level:>5} {h['p50'] or 0:>8.2f} {h['max'] or 0:>8.2f} {b['p50'] or 0:>9.2f} "
            f"{b['max'] or 0:>9.2f} {ratio:>6.2f} {h['failed']:>3}/{b['failed']:<3} {mem:>7}"
        )
        record(
            "bench_spawn",
            f"{level} at once via Hub, ready (max)",
            h["max"] if not h["failed"] else None,
            "s",
            b["max"] if not b["failed"] else None,
            "bare docker run, GET /api",
            None,
            f"p50 {h['p50'] or 0:.2f} s vs {b['p50'] or 0:.2f} s; MiB/ws {mem}",
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    failed = any(row["hub"]["failed"] for row in report["levels"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
