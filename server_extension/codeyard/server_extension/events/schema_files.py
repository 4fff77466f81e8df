"""Codeyard's event schemas: one file per event in `schemas/`, registered at extension load.

Any `*.yaml`, `*.yml` or `*.json` file dropped in `schemas/` is registered with the server's
`event_logger` (jupyter_events), so a new event needs only its schema file and
`events.emit(serverapp, name, data)`; the events socket relays it without further wiring.
A schema's `$id` is `https://codeyard.dev/events/<name>/v<version>`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from jupyter_events.schema import EventSchema

#: Where the schema files live (shipped inside the package).
SCHEMA_DIR = Path(__file__).with_name("schemas")

#: Every Codeyard event's schema `$id` starts with this.
SCHEMA_PREFIX = "https://codeyard.dev/events/"

SCHEMA_SUFFIXES = (".yaml", ".yml", ".json")

_ID = re.compile(re.escape(SCHEMA_PREFIX) + r"(?P<name>[a-z][a-z0-9_.-]*)/v(?P<version>[0-9]+)$")


def schema_id(name: str, version: int = 1) -> str:
    """The `$id` of event `name`'s schema."""
    return f"{SCHEMA_PREFIX}{name}/v{version}"


def event_name(schema: str) -> str | None:
    """`patch` for `https://codeyard.dev/events/patch/v1`; None for any other schema."""
    match = _ID.match(schema)
    return match.group("name") if match else None


def codeyard_schema_ids(event_logger: Any) -> list[str]:
    """The `$id`s of every Codeyard schema registered with `event_logger`."""
    return [s for s in event_logger.schemas.schema_ids if event_name(s) is not None]


def register_schemas(
    event_logger: Any, folder: Path = SCHEMA_DIR, *, log: logging.Logger | None = None
) -> list[str]:
    """Register every schema file in `folder` (sorted by name) with `event_logger`.

    A schema already registered (another extension, or a second load in one process) is
    left as it is. A file whose `$id` is not a Codeyard event id, or that jupyter_events
    refuses, is logged and skipped: one broken schema must not stop the server or hide the
    other events. Returns the `$id`s now registered from `folder`.
    """
    log = log or logging.getLogger(__name__)
    found: list[str] = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.suffix not in SCHEMA_SUFFIXES or not path.is_file():
            continue
        try:
            schema = EventSchema(path)
        except Exception as exc:  # jupyter_events raises several unrelated types
            log.error("codeyard event schema %s is not valid: %s", path.name, exc)
            continue
        if event_name(schema.id) is None:
            log.error(
                "codeyard event schema %s: $id %r must be %s<name>/v<version>",
                path.name,
                schema.id,
                SCHEMA_PREFIX,
            )
            continue
        if schema.id not in event_logger.schemas:
            event_logger.register_event_schema(schema)
        found.append(schema.id)
    return found
