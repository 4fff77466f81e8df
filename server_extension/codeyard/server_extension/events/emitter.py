"""`emit(serverapp, name, data)`: send one Codeyard event, from any thread, never failing the
caller.

jupyter_events' `EventLogger.emit` runs its listeners as tasks of the *current* event loop,
so it only works on the server's loop. Audit records (and so `files` events) are written by
worker threads and by the external-change watcher's thread; their events hop to the
server's loop first. An event that does not match its schema is logged, not raised: the
apply, commit or save it describes has already happened and must still answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .schema_files import schema_id

log = logging.getLogger(__name__)


def server_loop(serverapp: Any) -> asyncio.AbstractEventLoop | None:
    """The asyncio loop the server (and so its event listeners) runs on."""
    io_loop = getattr(serverapp, "io_loop", None)
    loop = getattr(io_loop, "asyncio_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


def emit(serverapp: Any, name: str, data: dict[str, Any]) -> None:
    """Emit event `name` (schema `https://codeyard.dev/events/<name>/v1`) with `data`.

    `data` must follow the schema: names, ids, hashes and counts, never code, prompts or
    answers. Safe to call from any thread.
    """
    event_logger = getattr(serverapp, "event_logger", None)
    if event_logger is None:
        return
    sid = schema_id(name)
    loop = server_loop(serverapp)
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None and (loop is None or running is loop):
        _emit_now(event_logger, sid, data)
    elif loop is not None and not loop.is_closed():
        # RuntimeError: the loop closed in between, the server is stopping.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_emit_now, event_logger, sid, dict(data))


def _emit_now(event_logger: Any, sid: str, data: dict[str, Any]) -> None:
    try:
        event_logger.emit(schema_id=sid, data=data)
    except Exception:
        log.exception("codeyard event %s was not sent", sid)
