"""What the load test watches on the Hub's side while users hit it, as asyncio tasks.

- The Hub process's CPU and resident memory, read from /proc/<pid>/stat and status (the
  Hub is one Python process: its CPU share tells whether its event loop is the bottleneck,
  100% being one core); the proxy's too, which carries every request.
- The proxy's route count, from configurable-http-proxy's own REST API (one route per
  running workspace plus the Hub's and the services'), so a lost route shows.
- /hub/health latency, sampled all through the run: a stalled event loop shows there first.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
from load_report import Recorder

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample_process(
    rec: Recorder, t0: float, pid: int, name: str, stop: asyncio.Event, interval: float = 1.0
) -> None:
    """Record `<name> cpu` (% of one core) and `<name> rss` (MiB) every `interval` s."""
    cpu, rss = rec.serie(f"{name} cpu", "% of one core"), rec.serie(f"{name} rss", "MiB")
    last_t, last_cpu = time.monotonic(), cpu_seconds(pid)
    while not stop.is_set():
        await asyncio.sleep(interval)
        try:
            now, used = time.monotonic(), cpu_seconds(pid)
            cpu.add(now - t0, 100 * (used - last_cpu) / (now - last_t))
            rss.add(now - t0, rss_mib(pid))
        except (FileNotFoundError, ProcessLookupError):
            return  # the process is gone; the run notices through its requests
        last_t, last_cpu = now, used


async def count_routes(
    rec: Recorder,
    t0: float,
    api_url: str,
    token: str,
    stop: asyncio.Event,
    interval: float = 2.0,
) -> None:
    """Record the proxy's route count every `interval` s."""
    routes = rec.serie("proxy routes", "routes")
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        while not stop.is_set():
            try:
                r = await client.get(
                    f"{api_url}/api/routes", headers={"Authorization": f"token {token}"}
                )
                if r.status_code == 200:
                    routes.add(time.monotonic() - t0, len(r.json()))
            except httpx.HTTPError:
                pass  # counted as a gap in the chart; the users' requests report failures
            await asyncio.sleep(interval)


async def probe_health(
    rec: Recorder, t0: float, url: str, stop: asyncio.Event, interval: float = 0.2
) -> None:
    """Time GET /hub/health again and again, one at a time (ms)."""
    latency = rec.serie("hub health latency", "ms")
    async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                r = await client.get(url)
                if r.status_code == 200:
                    latency.add(started - t0, 1000 * (time.monotonic() - started))
            except httpx.HTTPError:
                pass
            await asyncio.sleep(interval)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
