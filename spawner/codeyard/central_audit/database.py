"""Opening the central audit's database, and upgrading its schema with its own alembic history.

The history keeps its revision in `codeyard_audit_alembic_version`, not alembic's default
table, so the tables can share a database with the Hub (which has its own `alembic_version`)
or with the placement registry. As the Hub does: a new database is created at the newest
revision; one at another revision is refused until `python -m codeyard.central_audit
upgrade-db` has run (which backs an SQLite file up first).
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

VERSION_TABLE = "codeyard_audit_alembic_version"


class DatabaseSchemaMismatch(RuntimeError):
    pass


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("codeyard.central_audit") / "alembic"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url and url != "sqlite://":
                # WAL: exports and the admin page read while workspaces write. FULL: an
                # acknowledged record is on disk, since the workspace deletes its spooled copy.
                dbapi_conn.execute("PRAGMA journal_mode=WAL")
                dbapi_conn.execute("PRAGMA synchronous=FULL")
            dbapi_conn.execute("PRAGMA busy_timeout=10000")

    return engine


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def _backup_sqlite(url: str) -> Path | None:
    path = url.removeprefix("sqlite:///")
    if not url.startswith("sqlite:///") or not path or path == ":memory:":
        return None
    src = Path(path)
    if not src.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    dest = src.with_name(f"{src.name}.{stamp}.bak")
    shutil.copy2(src, dest)
    log.info("Backed up %s to %s", src, dest)
    return dest


def upgrade(url: str, revision: str = "head", backup: bool = True) -> Path | None:
    """Upgrade the database at `url` to `revision`; returns the SQLite backup's path."""
    dest = _backup_sqlite(url) if backup else None
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
    return dest


def open_db(url: str) -> sessionmaker[Session]:
    """A session factory for `url`, creating the tables at head in a database without them.

    Refuses tables at another revision (DatabaseSchemaMismatch), so a newer Codeyard never
    writes into an old schema.
    """
    engine = make_engine(url)
    tables = set(inspect(engine).get_table_names())
    if "codeyard_audit_records" not in tables:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    else:
        found, head = current_revision(engine), head_revision()
        if found != head:
            engine.dispose()
            raise DatabaseSchemaMismatch(
                f"The central audit's tables are at revision {found}, this Codeyard needs "
                f"{head}. Back the database up and run `python -m codeyard.central_audit "
                "upgrade-db`."
            )
    return sessionmaker(engine, expire_on_commit=False)
