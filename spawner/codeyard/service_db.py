"""The databases of Codeyard's Hub services, each with its own alembic history, opened and
upgraded the way JupyterHub treats its own: a new database is created at the newest
revision; one at another revision is refused until its `upgrade-db` command has run (which
backs an SQLite file up first).

The placement registry (`codeyard.placement.database`) and the central audit
(`codeyard.central_audit.database`) each describe theirs with one `ServiceDatabase`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
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


class DatabaseSchemaMismatch(RuntimeError):
    pass


def backup_sqlite(url: str) -> Path | None:
    """Copy an SQLite file beside itself with a time stamp; None for other databases."""
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


@dataclass(frozen=True)
class ServiceDatabase:
    """One service's schema: where its alembic history lives and how to tell it is there."""

    #: The package holding `alembic/` (env.py and versions/).
    package: str
    #: A table that exists once the schema does: without it, `open_db` creates everything.
    marker_table: str
    #: What a refusal tells the admin to run, e.g. `python -m codeyard.placement upgrade-db`.
    upgrade_command: str
    #: How a refusal names the database, e.g. "The placement database".
    label: str
    #: Alembic's version table; a distinct one lets several histories share one database.
    version_table: str = "alembic_version"
    #: SQLite's `synchronous` pragma under WAL: NORMAL is durable at checkpoints (enough
    #: where a lost last commit is redone); FULL where an acknowledged write must survive.
    sqlite_synchronous: str = "NORMAL"

    def alembic_config(self, url: str) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(files(self.package) / "alembic"))
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        return cfg

    def head_revision(self) -> str:
        head = ScriptDirectory.from_config(self.alembic_config("sqlite://")).get_current_head()
        assert head is not None
        return head

    def make_engine(self, url: str) -> Engine:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False}
        engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            synchronous = self.sqlite_synchronous

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
                dbapi_conn.execute("PRAGMA foreign_keys=ON")
                # WAL: pages and exports read while the Hub or the workspaces write.
                if ":memory:" not in url and url != "sqlite://":
                    dbapi_conn.execute("PRAGMA journal_mode=WAL")
                    dbapi_conn.execute(f"PRAGMA synchronous={synchronous}")
                dbapi_conn.execute("PRAGMA busy_timeout=10000")

        return engine

    def current_revision(self, engine: Engine) -> str | None:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": self.version_table})
            return ctx.get_current_revision()

    def _migrate(self, engine: Engine, url: str, revision: str) -> None:
        with engine.begin() as conn:
            cfg = self.alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def upgrade(self, url: str, revision: str = "head", backup: bool = True) -> Path | None:
        """Upgrade the database at `url` to `revision`; returns the SQLite backup's path."""
        dest = backup_sqlite(url) if backup else None
        engine = self.make_engine(url)
        try:
            self._migrate(engine, url, revision)
        finally:
            engine.dispose()
        return dest

    def upgrade_and_report(self, url: str) -> str:
        """What each service's `upgrade-db` command does and prints: upgrade `url` to the
        newest revision (backing an SQLite file up first) and say from which revision, and
        where the backup is, so an admin can undo it."""
        engine = self.make_engine(url)
        before = self.current_revision(engine)
        engine.dispose()
        backup = self.upgrade(url)
        return f"upgraded {before or '(empty)'} -> {self.head_revision()}" + (
            f"; backup: {backup}" if backup else ""
        )

    def open_db(self, url: str) -> sessionmaker[Session]:
        """A session factory for `url`, creating the schema at head where it is missing.

        Refuses a schema at another revision (DatabaseSchemaMismatch), so a newer Codeyard
        never writes into an old one.
        """
        engine = self.make_engine(url)
        if self.marker_table not in set(inspect(engine).get_table_names()):
            self._migrate(engine, url, "head")
        else:
            found, head = self.current_revision(engine), self.head_revision()
            if found != head:
                engine.dispose()
                raise DatabaseSchemaMismatch(
                    f"{self.label} is at revision {found}, this Codeyard needs {head}. "
                    f"Back it up and run `{self.upgrade_command}`."
                )
        return sessionmaker(engine, expire_on_commit=False)


def run_alembic_env(
    metadata: Any, version_table: str = "alembic_version", table_prefix: str = ""
) -> None:
    """The body of each history's alembic `env.py`: migrate offline (SQL out) or online.

    Online, it uses the connection `ServiceDatabase` hands over in the config's attributes,
    or opens the configured URL. `table_prefix` limits autogenerate to this history's
    tables, for histories that share a database with their neighbours.
    """
    from alembic import context

    def include(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not table_prefix or type_ != "table" or str(name).startswith(table_prefix)

    options: dict[str, Any] = {
        "target_metadata": metadata,
        "render_as_batch": True,
        "version_table": version_table,
        "include_object": include,
    }
    config = context.config

    def run(connection: Any) -> None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: no sqlalchemy.url and no connection given")
    engine = create_engine(url)
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
