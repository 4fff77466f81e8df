"""`GET codeyard/api/events`: a WebSocket streaming the workspace's events as they happen.

Each message is one event, `{"event": name, "data": {...}, "time": ISO-8601}`; clients send
nothing. Authentication and authorization are jupyter_server's own, as its kernel and
event sockets do them: `@ws_authenticated` refuses a request without a user (403, no
redirect), then `@authorized` checks `read` on the `codeyard-events` resource.

A client that reads too slowly for its bounded queue is closed with `SLOW_CLIENT_CLOSE`
(1013, "try again later"); it reconnects and reloads what it shows.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .fanout import EventFanout, Subscriber

#: Close code for a client whose queue overflowed (RFC 6455 registry: "Try Again Later").
SLOW_CLIENT_CLOSE = 1013
SLOW_CLIENT_REASON = "events came faster than this client read them"


class EventsHandler(WebSocketMixin, WebSocketHandler, ExtensionHandlerMixin, JupyterHandler):  # type: ignore[misc]
    """Relays every Codeyard event to one client through its own bounded queue."""

    auth_resource = "codeyard-events"

    _subscriber: Subscriber | None = None
    _writer: asyncio.Task[None] | None = None

    @property
    def fanout(self) -> EventFanout:
        fanout: EventFanout = self.settings["codeyard_events"]
        return fanout

    def set_default_headers(self) -> None:
        """JupyterHandler's page headers (CSP and the like) mean nothing on a socket."""

    @ws_authenticated
    @authorized
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().open(*args, **kwargs)  # WebSocketMixin: keep-alive pings
        self._subscriber = self.fanout.subscribe(self._overflowed)
        self._writer = asyncio.ensure_future(self._write_queue(self._subscriber))

    async def _write_queue(self, sub: Subscriber) -> None:
        """Send queued events one by one; awaiting each write is what lets the queue fill
        (and the client be dropped) when the client stops reading."""
        while True:
            message = await sub.queue.get()
            try:
                await self.write_message(message)
            except WebSocketClosedError:
                return

    def _overflowed(self) -> None:
        self.log.warning(
            "codeyard events: a client fell %d events behind; closing its socket",
            self.fanout.queue_size,
        )
        self._stop()
        self.close(SLOW_CLIENT_CLOSE, SLOW_CLIENT_REASON)

    def on_message(self, message: str | bytes) -> None:
        """Clients have nothing to say; whatever they send is ignored."""

    def on_close(self) -> None:
        self._stop()
        if self.ping_callback is not None:
            self.ping_callback.stop()

    def _stop(self) -> None:
        if self._subscriber is not None:
            self.fanout.unsubscribe(self._subscriber)
            self._subscriber = None
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
