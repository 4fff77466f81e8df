"""Codeyard's load test (`make load`): many simulated users against the real stack.

It brings up the project's Hub (as `make up` runs it) on a fresh state folder plus two
namespace machines in its placement registry (tests/load/load_stack.py), then runs the users
of tests/load/simulated_user.py in phases, so each storm is a real one:

1. idle:        /hub/health alone, the baseline;
2. sign-up:     every user signs up, `--concurrency` at a time (bcrypt hashpw);
3. login storm: every user logs in, opens the home page and makes a token (bcrypt checkpw);
4. hub api:     every user makes `--api-calls` REST calls with the token;
5. spawn:       `--workspaces` users start a named workspace at once; placement spreads them
                over the three hosts; the Hub's concurrent_spawn_limit answers 429 to the
                excess, which the users retry;
6. work:        in each workspace `--rounds` rounds of tree, open file, patch validate,
                apply and revert, and an explanation from the model;
7. stop:        each workspace is deleted.

All along it samples the Hub process's CPU and memory from /proc, the proxy's route count and
/hub/health latency (tests/load/hub_probes.py). It prints a table (p50/p95/p99 per kind of
request, failures by cause, 429 back-pressure apart) and writes an HTML chart and the raw
numbers under `--out` (default .artifacts/load/). The exit status is 1 when a target is
missed: a failed request, Hub API p95 >= 1 s, or a spawn that never became ready.

Usage: python tests/load/run_load.py [--users 500] [--workspaces 50] [--concurrency 50]
Env: CODEYARD_TEST_IMAGE (an image tag already built; else the tree's is built),
     CODEYARD_TEST_VLLM_URL/KEY_FILE (the model; `make load` starts one when unset),
     CODEYARD_TEST_MACHINES (machines from an outer with-machines.sh, else its own two).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hub_probes import count_routes, load_average, probe_health, sample_process
from load_report import Recorder
from load_stack import LoadStack, load_stack
from simulated_user import SimulatedUser
from support.hub import ensure_images

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# The explanation is capped so that the model's time per request stays small on a CPU vLLM;
# the workspace's own concurrency limit towards the gateway still applies.
SITE_CONFIG = 'c.Spawner.args = ["--CodeyardLLM.explain_max_tokens=40"]\n'


async def bounded(limit: int, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run `jobs` with at most `limit` at a time, in order of start."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(j) for j in jobs))


class Phases:
    """Marks the run's phases on the recorder, and prints each as it ends."""

    def __init__(self, rec: Recorder, t0: float) -> None:
        self.rec, self.t0 = rec, t0

    async def run(self, name: str, work: Awaitable[T]) -> T:
        start = time.monotonic() - self.t0
        print(f"[load] {name}...", file=sys.stderr, flush=True)
        try:
            return await work
        finally:
            end = time.monotonic() - self.t0
            self.rec.phases.append((name, start, end))
            print(
                f"[load] {name}: {end - start:.1f} s (load average {load_average()})",
                file=sys.stderr,
                flush=True,
            )


async def drive(stack: LoadStack, args: argparse.Namespace, rec: Recorder) -> None:
    t0 = time.monotonic()
    stop = asyncio.Event()
    probes = [
        asyncio.create_task(sample_process(rec, t0, stack.hub.proc.pid, "hub", stop)),  # type: ignore[union-attr]
        asyncio.create_task(sample_process(rec, t0, stack.proxy_pid, "proxy", stop)),
        asyncio.create_task(count_routes(rec, t0, stack.proxy_api_url, stack.proxy_token, stop)),
        asyncio.create_task(probe_health(rec, t0, stack.health_url, stop)),
    ]
    phases = Phases(rec, t0)
    users = [
        SimulatedUser(f"{stack.user_prefix}{i:04d}", stack.hub.url, rec, t0)
        for i in range(args.users)
    ]
    try:
        await phases.run("idle", asyncio.sleep(5))
        signed = await phases.run("sign-up", bounded(args.concurrency, [u.signup for u in users]))
        users = [u for u, ok in zip(users, signed, strict=True) if ok]
        logged = await phases.run(
            "login storm", bounded(args.concurrency, [u.login for u in users])
        )
        users = [u for u, ok in zip(users, logged, strict=True) if ok]
        await phases.run(
            "hub api",
            bounded(
                args.concurrency,
                [functools.partial(u.use_hub_api, args.api_calls) for u in users],
            ),
        )
        workers = users[: args.workspaces]
        times = await phases.run(
            "spawn",
            asyncio.gather(*(u.start_workspace("load", args.spawn_timeout) for u in workers)),
        )
        for u, seconds in zip(workers, times, strict=True):
            rec.spawns.append(
                {
                    "user": u.name,
                    "host": u.host,
                    "seconds": seconds or 0.0,
                    "ok": seconds is not None,
                }
            )
        ready = [u for u, s in zip(workers, times, strict=True) if s is not None]
        await phases.run(
            "work",
            asyncio.gather(*(u.work(args.rounds, explain=not args.no_explain) for u in ready)),
        )
        await phases.run("stop", asyncio.gather(*(u.stop_workspace() for u in ready)))
        await asyncio.sleep(3)  # a last few samples of the Hub at rest
    finally:
        stop.set()
        await asyncio.gather(*probes, return_exceptions=True)


def targets(rec: Recorder) -> list[str]:
    """The targets the run missed (empty: all met)."""
    s = rec.summary()
    missed = []
    if s["failed"]:
        missed.append(f"{s['failed']} failed requests (target 0)")
    if not s["hub_api_p95_ms"] < 1000:
        missed.append(f"Hub API p95 {s['hub_api_p95_ms']:.0f} ms (target < 1000 ms)")
    if s["spawns_ready"] < s["spawns_requested"]:
        missed.append(f"{s['spawns_requested'] - s['spawns_ready']} spawns lost (target 0)")
    return missed


def report(rec: Recorder, args: argparse.Namespace) -> list[str]:
    """Print the table, write the HTML chart and the raw numbers; the missed targets."""
    print(rec.table())
    missed = targets(rec)
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    page = out / f"load-{args.users}u-{args.workspaces}w-{stamp}.html"
    page.write_text(
        rec.html(f"Codeyard load test, {args.users} users, {args.workspaces} workspaces")
    )
    raw: dict[str, Any] = {
        "summary": rec.summary(),
        "by_kind": rec.by_kind(),
        "health_by_phase": rec.health_by_phase(),
        "failures": dict(rec.failures()),
        "spawns": rec.spawns,
        "notes": rec.notes,
        "phases": rec.phases,
        "series": {k: dataclasses.asdict(v) for k, v in rec.series.items()},
    }
    page.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"chart: {page}", flush=True)
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument(
        "--concurrency", type=int, default=50, help="users at a time in the Hub phases"
    )
    parser.add_argument("--api-calls", type=int, default=10, help="REST calls per user")
    parser.add_argument("--rounds", type=int, default=3, help="work rounds per workspace")
    parser.add_argument("--no-explain", action="store_true", help="skip the model")
    parser.add_argument("--spawn-timeout", type=float, default=900)
    parser.add_argument("--site-config", help="a file of Hub config added to the run's site config")
    parser.add_argument(
        "--machine-image-store",
        default="",
        help='tmpfs size of each machine\'s image store (e.g. "3g"); default: on disk',
    )
    parser.add_argument("--out", default=str(REPO / ".artifacts" / "load"))
    args = parser.parse_args()

    image = os.environ.get("CODEYARD_TEST_IMAGE") or ensure_images()
    site = SITE_CONFIG + (Path(args.site_config).read_text() if args.site_config else "")
    prefix = f"ld{secrets.token_hex(2)}u"
    rec = Recorder()
    load_before = load_average()
    wall = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_copy = Path(args.out) / f"hub-{args.users}u-{args.workspaces}w-{stamp}.log"
    with load_stack(
        image, prefix, site, image_store=args.machine_image_store, log_copy=log_copy
    ) as stack:
        rec.notes["image copy to machines (s)"] = {
            k: round(v, 1) for k, v in stack.image_copy_seconds.items()
        }
        asyncio.run(drive(stack, args, rec))
        # Report before the clean-up, which takes a while (the machines' image stores).
        rec.notes["users / workspaces / concurrency"] = (
            f"{args.users} / {args.workspaces} / {args.concurrency}"
        )
        rec.notes["image"] = image
        rec.notes["load average before / after"] = f"{load_before} / {load_average()}"
        rec.notes["wall time (s)"] = round(time.monotonic() - wall)
        rec.notes["site config"] = site.strip().replace("\n", "; ")
        missed = report(rec, args)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
