"""The placement registry on a real PostgreSQL server, as a site with several machines runs it.

The alembic migrations go up, down to nothing and up again there, an old database upgrades with
its rows, and the registry's rules (`test_registry.py`, imported below and run again here with
`db_url` naming a PostgreSQL database) hold as they do on SQLite. Credentials stay encrypted in
a real `pg_dump`, and concurrent placements keep to a host's capacity.

PostgreSQL comes from `support.postgres`: the run's shared server when the tests run under
`tests/support/with-postgres.sh` (`make test` does), else one started for this module.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections import Counter

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from placement_pki import CA
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from support import postgres

# The registry's rules, collected again in this module, where `db_url` is PostgreSQL.
from test_registry import *  # noqa: F403

from codeyard.placement.__main__ import main as cli
from codeyard.placement.crypto import KEY_ENV, CredentialCipher
from codeyard.placement.database import (
    DatabaseSchemaMismatch,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    open_db,
    upgrade,
)
from codeyard.placement.models import Base, Placement, Server, ServerState
from codeyard.placement.policies import NoHostAvailable
from codeyard.placement.registry import Conflict, Registry

# the session fixture: the run's shared server, else one started for this module
postgres_server = postgres.postgres_server

TABLES = {"servers", "credentials", "placements", "policy_settings", "decisions", "policy_cursors"}


@pytest.fixture
def db_url(postgres_server: str) -> str:
    """An empty PostgreSQL database of this test's own (overrides conftest's SQLite file)."""
    return postgres.fresh_database(postgres_server, postgres.unique_name("placement"))


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_database_is_postgresql(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert engine.dialect.name == "postgresql"
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version()")).startswith("PostgreSQL ")
    finally:
        engine.dispose()


def test_migrations_go_up_down_to_nothing_and_up_again(db_url: str) -> None:
    upgrade(db_url, backup=False)
    assert _tables(db_url) >= TABLES
    engine = make_engine(db_url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()

    command.downgrade(alembic_config(db_url), "base")
    assert _tables(db_url) <= {"alembic_version"}
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    engine.dispose()

    upgrade(db_url, backup=False)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        # the models match the migrations on PostgreSQL's types too (booleans, JSON, enums)
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert current_revision(engine) == head_revision()
    engine.dispose()
    open_db(db_url).kw["bind"].dispose()


def test_a_populated_first_revision_upgrades_and_keeps_its_rows(db_url: str) -> None:
    upgrade(db_url, "0001_registry", backup=False)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        for sid, name, state in ((1, "hs1", "active"), (2, "hs2", "draining")):
            conn.execute(
                text(
                    "INSERT INTO servers (id, name, endpoint, region, labels, storage_root,"
                    " storage_shared, max_workspaces, cpu_capacity, mem_capacity, state,"
                    " consecutive_failures, created) VALUES (:id, :name, 'unix:///d.sock',"
                    " 'eu', '{}', '/srv', true, 10, 4.0, 8192, :state, 0,"
                    " '2026-11-01 00:00:00')"
                ),
                {"id": sid, "name": name, "state": state},
            )
        conn.execute(
            text(
                'INSERT INTO placements ("user", workspace, server_id, state, mem_reserved,'
                " updated) VALUES ('alice', '', 1, 'running', 512, '2026-11-01 00:00:00')"
            )
        )
    engine.dispose()
    with pytest.raises(DatabaseSchemaMismatch, match="upgrade-db"):
        open_db(db_url)

    assert cli(["--db-url", db_url, "upgrade-db"]) == 0

    sessions = open_db(db_url)
    with sessions() as db:
        p = db.query(Placement).one()
        assert (p.user, p.server.name, p.mem_reserved) == ("alice", "hs1", 512)
        assert p.pinned_server_id is None and p.restart_requested is False
        assert {s.name: s.drain_requested for s in db.query(Server)} == {
            "hs1": False,
            "hs2": True,
        }
    sessions.kw["bind"].dispose()


def _pg_dump(url: str) -> str:
    """The whole database as `pg_dump` writes it: what a backup of the registry holds."""
    u = make_url(url)
    out = subprocess.run(
        [
            str(postgres.bin_dir() / "pg_dump"),
            "--host",
            str(u.host),
            "--port",
            str(u.port),
            "--username",
            str(u.username),
            "--no-password",
            str(u.database),
        ],
        env={"PGPASSWORD": str(u.password), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_credentials_are_encrypted_in_a_pg_dump_and_decrypt_for_the_hub(
    registry: Registry, db_url: str, ca: CA
) -> None:
    bundle = ca.bundle()
    tls = registry.add_server(
        {"name": "hs1", "endpoint": "tcp://127.0.0.2:2376", "credential": bundle}
    )
    registry.add_server(
        {
            "name": "gw",
            "endpoint": "unix:///run/gw.sock",
            "credential": {"kind": "token", "token": "s3cr3t-token-value"},
        }
    )
    dump = _pg_dump(db_url)
    assert "COPY public.credentials" in dump  # the rows are in the dump, encrypted
    assert "-----BEGIN" not in dump
    assert "PRIVATE" not in dump
    assert "s3cr3t-token-value" not in dump
    assert tls["credential"] is not None
    assert set(tls["credential"]["fingerprints"]) == {"ca", "cert", "key"}
    endpoint, kind, secret = registry.connection(tls["id"])
    assert (endpoint, kind) == ("tcp://127.0.0.2:2376", "tls")
    assert secret is not None and secret["key"] == bundle["key"]


def test_list_drain_and_a_name_conflict_as_on_sqlite(registry: Registry) -> None:
    a = registry.add_server({"name": "hs-a", "endpoint": "unix:///run/a.sock"})["id"]
    registry.add_server({"name": "hs-b", "endpoint": "unix:///run/b.sock"})
    with pytest.raises(Conflict, match="a server named 'hs-a' exists"):
        registry.add_server({"name": "hs-a", "endpoint": "unix:///run/other.sock"})
    assert [s["name"] for s in registry.list_servers()] == ["hs-a", "hs-b"]
    drained = registry.set_state(a, ServerState.draining)
    assert (drained["state"], drained["drain_requested"]) == ("draining", True)
    assert {registry.place(f"u{i}").server_name for i in range(3)} == {"hs-b"}


def test_concurrent_placements_never_exceed_a_hosts_capacity(registry: Registry) -> None:
    registry.add_server({"name": "small", "endpoint": "unix:///run/s.sock", "max_workspaces": 3})
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def spawn_five(who: str) -> None:
        start.wait()
        for i in range(5):
            try:
                outcomes.append(registry.place(f"{who}{i}").server_name)
            except NoHostAvailable:
                outcomes.append("refused")

    threads = [threading.Thread(target=spawn_five, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert Counter(outcomes) == {"small": 3, "refused": 7}
    assert registry.get_server("small")["load"]["running"] == 3
    assert len(registry.list_placements(server="small")) == 3


def test_two_registries_on_one_database_never_exceed_a_hosts_capacity(
    db_url: str, crypt_keys: tuple[str, str]
) -> None:
    """Two processes' registries (two session factories, two in-process locks) place into
    one PostgreSQL database: the database's own lock keeps them from overfilling a host."""
    first = Registry(open_db(db_url), CredentialCipher(os.environ[KEY_ENV]))
    second = Registry(open_db(db_url), CredentialCipher(os.environ[KEY_ENV]))
    first.add_server({"name": "small", "endpoint": "unix:///run/s.sock", "max_workspaces": 3})
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def spawn_five(registry: Registry, who: str) -> None:
        start.wait()
        for i in range(5):
            try:
                outcomes.append(registry.place(f"{who}{i}").server_name)
            except NoHostAvailable:
                outcomes.append("refused")

    threads = [
        threading.Thread(target=spawn_five, args=(r, w)) for r, w in ((first, "a"), (second, "b"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert Counter(outcomes) == {"small": 3, "refused": 7}
    assert len(second.list_placements(server="small")) == 3
