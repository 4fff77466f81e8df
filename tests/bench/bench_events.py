"""Benchmark: how long after an apply's answer its `patch` event reaches a subscribed client.

A real `jupyter server` with Codeyard on 127.0.0.1 (token auth, the external-change
watcher on); one client subscribes to `codeyard/api/events` over a real WebSocket (tornado's
client in a thread of its own, stamping each message as it arrives), another calls
`POST patch/apply` over one keep-alive HTTP connection, as the panel does. Each round
applies a one-file patch and reverts it (the revert untimed).

Measured per round:
- **delay**: event receipt minus the moment the apply's answer was read. The server emits
  the event just before it writes the answer, so this is often about zero or negative: the
  number is how much later than the answer itself another tab learns of the apply.
- **baseline**: the apply's own round trip (request sent to answer read), in the same run.
- **external**: a file written by this process (as a kernel or terminal would), to its
  `files` event; this includes the watcher's debounce (`watcher.DEBOUNCE`, 0.25 s).

Target: the delay's p95 under 1 s (the events are meant to feel live); printed with
median and p95 of each series.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from results import record
from server import Server, running_server
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

ROUNDS = int(os.environ.get("BENCH_EVENTS_ROUNDS", "60"))
EXTERNAL_ROUNDS = int(os.environ.get("BENCH_EVENTS_EXTERNAL_ROUNDS", "15"))
TARGET_S = 1.0
WAIT_S = 30.0


class Subscriber:
    """A WebSocket client on its own loop and thread; `events` gets (arrival, message)."""

    def __init__(self, srv: Server) -> None:
        self.url = f"ws://127.0.0.1:{srv.port}/codeyard/api/events"
        self.headers = {"Authorization": f"token {srv.token}"}
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))
        self.thread.daemon = True
        self.thread.start()
        if not self.ready.wait(WAIT_S):
            raise RuntimeError("the events socket did not open")

    async def _run(self) -> None:
        conn = await websocket_connect(HTTPRequest(self.url, headers=self.headers))
        self.ready.set()
        while (text := await conn.read_message()) is not None:
            self.events.put((time.perf_counter(), json.loads(text)))

    def wait(self, match: Any) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + WAIT_S
        while True:
            arrived, message = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if match(message):
                return arrived, message


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{name}: median {statistics.median(ms):.1f} ms, p95 {quantile(ms, 0.95):.1f} ms, "
        f"min {min(ms):.1f} ms, max {max(ms):.1f} ms ({len(ms)} rounds)"
    )


def create(path: str, n: int) -> str:
    return f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+value = {n}\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp, "workspace")
        ws.mkdir()
        load_before = os.getloadavg()
        with running_server(ws) as srv:
            sub = Subscriber(srv)
            delays, round_trips = [], []
            for n in range(ROUNDS + 1):
                start = time.perf_counter()
                result = srv.post("patch/apply", {"diff": create("bench.py", n)})
                answered = time.perf_counter()
                patch_id = result["patch_id"]
                arrived, _ = sub.wait(
                    lambda m, p=patch_id: m["event"] == "patch" and m["data"]["patch_id"] == p
                )
                if n:  # the first round warms up both sides
                    delays.append(arrived - answered)
                    round_trips.append(answered - start)
                srv.post(f"patch/{patch_id}/revert", {})
            external = []
            for n in range(EXTERNAL_ROUNDS):
                name = f"external{n}.txt"
                written = time.perf_counter()
                Path(ws, name).write_text(f"line {n}\n")
                arrived, _ = sub.wait(
                    lambda m, p=name: m["event"] == "files" and p in m["data"]["paths"]
                )
                external.append(arrived - written)
            chain_ok = srv.get("audit", limit=1)["chain_ok"]
        load_after = os.getloadavg()
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
        print(summary("apply answer -> patch event (delay)", delays))
        print(summary("patch/apply round trip (baseline)", round_trips))
        print(summary("external write -> files event (incl. 250 ms debounce)", external))
        p95 = quantile(delays, 0.95)
        verdict = "met" if p95 < TARGET_S else "MISSED"
        print(
            f"TARGET event delay p95 {p95 * 1000:.1f} ms < {TARGET_S * 1000:.0f} ms: {verdict}; "
            f"delay/round-trip medians "
            f"{statistics.median(delays) / statistics.median(round_trips):.2f}"
        )
        record(
            "bench_events",
            f"patch event delay p95 < {TARGET_S * 1000:.0f} ms",
            p95 * 1000,
            "ms",
            statistics.median(round_trips) * 1000,
            "patch/apply round trip, median",
            p95 < TARGET_S,
        )
        print(f"audit chain_ok={chain_ok}")


if __name__ == "__main__":
    main()
