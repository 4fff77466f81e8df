"""Live workspace events, jupyter_events style: one schema per event in `schemas/`, emitted
on the server's `event_logger` and streamed to clients by `GET codeyard/api/events`.

- `schema_files`: registers every schema file in `schemas/` at extension load.
- `emitter.emit(serverapp, name, data)`: send an event from any thread.
- `producers`: the events of patches, file changes, explain/rewrite, the model and git.
- `fanout`: one bounded queue per connected client.
- `handlers`: the WebSocket.

See docs/events.md for the schemas and what never goes into an event.
"""

from __future__ import annotations

from typing import Any

from traitlets import Int, validate
from traitlets.config import LoggingConfigurable

from ..audit import AuditLog
from .emitter import emit
from .fanout import EventFanout
from .handlers import EventsHandler
from .producers import ModelStatusEvents, RecordEvents
from .schema_files import SCHEMA_DIR, SCHEMA_PREFIX, register_schemas, schema_id

__all__ = [
    "SCHEMA_DIR",
    "SCHEMA_PREFIX",
    "CodeyardEvents",
    "EventsHandler",
    "emit",
    "events_routes",
    "events_settings",
    "register_schemas",
    "schema_id",
]


class CodeyardEvents(LoggingConfigurable):
    """Settings of the events socket (`c.CodeyardEvents.*`)."""

    queue_size = Int(
        1000,
        help="""Most events waiting to be sent to one client. A client that falls this far
        behind (it stopped reading, or reads slower than events come) is closed with code
        1013 and reconnects; the server never waits for it, and other clients are not
        slowed down.""",
    ).tag(config=True)

    @validate("queue_size")
    def _positive(self, proposal: Any) -> Any:
        if proposal["value"] < 1:
            raise ValueError("queue_size must be at least 1")
        return proposal["value"]


def events_settings(app: Any, *, audit: AuditLog) -> dict[str, Any]:
    """Register the schemas, start relaying, and turn audit records into `files` events.

    Called once from `CodeyardApp.initialize_settings` (`app`); returns the tornado settings
    the handlers read.
    """
    serverapp = app.serverapp
    event_logger = serverapp.event_logger
    register_schemas(event_logger, log=app.log)
    config = CodeyardEvents(parent=app)
    fanout = EventFanout(event_logger, queue_size=config.queue_size)
    fanout.attach()
    audit.add_listener(RecordEvents(serverapp))
    return {"codeyard_events": fanout, "codeyard_model_events": ModelStatusEvents(serverapp)}


def events_routes(api: str) -> list[tuple[str, type[EventsHandler]]]:
    """The events socket under the API prefix `api`."""
    return [(rf"{api}/events", EventsHandler)]
