"""Fan every Codeyard event out to the connected sockets, each through a bounded queue.

One listener per Codeyard schema sits on the server's `event_logger`; it turns each event
into the socket's message `{"event": name, "data": {...}, "time": ISO-8601}` once and offers
it to every subscriber's queue without waiting. A subscriber whose queue is full (its client
reads slower than events come) is told to go (`on_overflow`) and stops receiving: a slow
client loses its stream, it never holds up the server or the other clients. The client
reconnects and reloads what it shows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .schema_files import codeyard_schema_ids, event_name


class Subscriber:
    """One socket's queue of encoded messages."""

    def __init__(self, size: int, on_overflow: Callable[[], None]) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=size)
        self.on_overflow = on_overflow
        self.dropped = False

    def offer(self, message: str) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped = True
            self.on_overflow()


class EventFanout:
    """Relays the events of every Codeyard schema on `event_logger` to its subscribers.

    `attach()` listens to every Codeyard schema registered so far; it is called at load and
    again whenever a socket opens, so a schema registered after the extension loaded is
    relayed too (listeners are a set: attaching twice adds nothing).
    """

    def __init__(self, event_logger: Any, *, queue_size: int) -> None:
        self.event_logger = event_logger
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()

    def attach(self) -> None:
        for sid in codeyard_schema_ids(self.event_logger):
            self.event_logger.add_listener(schema_id=sid, listener=self._relay)

    def subscribe(self, on_overflow: Callable[[], None]) -> Subscriber:
        self.attach()
        sub = Subscriber(self.queue_size, on_overflow)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def _relay(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        name = event_name(schema_id)
        if name is None or not self.subscribers:
            return
        message = json.dumps(
            {
                "event": name,
                "data": data,
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
        )
        for sub in list(self.subscribers):
            sub.offer(message)
            if sub.dropped:
                self.subscribers.discard(sub)
