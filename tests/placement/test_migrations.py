"""The schema evolves through alembic only, and old databases upgrade with their data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from codeyard.placement.__main__ import main as cli
from codeyard.placement.database import (
    DatabaseSchemaMismatch,
    head_revision,
    make_engine,
    open_db,
    upgrade,
)
from codeyard.placement.models import Base, Placement, Server


def test_models_match_the_newest_migration(db_url: str) -> None:
    upgrade(db_url, backup=False)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_populated_first_revision_upgrades_and_keeps_rows(db_url: str) -> None:
    upgrade(db_url, "0001_registry", backup=False)
    path = Path(db_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO servers (id, name, endpoint, region, labels, storage_root,"
            " storage_shared, max_workspaces, cpu_capacity, mem_capacity, state,"
            " consecutive_failures, created) VALUES (1, 'hs1', 'unix:///d.sock', 'eu', '{}',"
            " '/srv', 1, 10, 4.0, 8192, 'active', 0, '2026-11-01 00:00:00')"
        )
        conn.execute(
            "INSERT INTO servers (id, name, endpoint, region, labels, storage_root,"
            " storage_shared, max_workspaces, cpu_capacity, mem_capacity, state,"
            " consecutive_failures, created) VALUES (2, 'hs2', 'unix:///e.sock', 'eu', '{}',"
            " '/srv', 1, 10, 4.0, 8192, 'draining', 0, '2026-11-01 00:00:00')"
        )
        conn.execute(
            "INSERT INTO placements (user, workspace, server_id, state, mem_reserved, updated)"
            " VALUES ('alice', '', 1, 'running', 512, '2026-11-01 00:00:00')"
        )
    with pytest.raises(DatabaseSchemaMismatch, match="upgrade-db"):
        open_db(db_url)

    assert cli(["--db-url", db_url, "upgrade-db"]) == 0
    assert list(path.parent.glob("placement.sqlite.*.bak")), "SQLite is backed up first"

    sessions = open_db(db_url)
    with sessions() as db:
        p = db.query(Placement).one()
        assert (p.user, p.server.name, p.mem_reserved) == ("alice", "hs1", 512)
        assert p.pinned_server_id is None and p.restart_requested is False
        drained = {s.name: s.drain_requested for s in db.query(Server)}
        assert drained == {"hs1": False, "hs2": True}  # revision 3 keeps the drain intent
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
    assert rev == head_revision()


def test_downgrade_to_first_revision_and_back(db_url: str) -> None:
    upgrade(db_url, backup=False)
    upgrade_then = make_engine(db_url)
    upgrade_then.dispose()
    from alembic import command

    from codeyard.placement.database import alembic_config

    command.downgrade(alembic_config(db_url), "0001_registry")
    upgrade(db_url, backup=False)
    open_db(db_url)
