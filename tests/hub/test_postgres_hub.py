"""The Hub as a site with several machines runs it: its database and the placement registry on
a real PostgreSQL server, each in a database of its own, chosen by the two settings an admin
sets (`CODEYARD_DATABASE_URL`, `CODEYARD_PLACEMENT_DB_URL`).

A user signs up and logs in through the real form, takes a token and starts a workspace; the
rows are read back from PostgreSQL, nothing is written to SQLite in the state folder, and a Hub
restart finds the user, the token and the running workspace again.

The tests run in file order and share one Hub (spawns are slow). PostgreSQL comes from
`support.postgres`: the run's shared server under `tests/support/with-postgres.sh` (`make test`),
else one started for this module.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests
from sqlalchemy import create_engine, inspect, text
from support import postgres
from support.browser import Browser, start_workspace
from support.hub import HubProcess

from codeyard.placement.database import current_revision, head_revision, make_engine, open_db
from codeyard.placement.registry import Registry

pytestmark = pytest.mark.slow

# the session fixture: the run's shared server, else one started for this module
postgres_server = postgres.postgres_server

PASSWORD = "correct-horse-battery-7"
WS = "pg"


@dataclass
class PostgresHub:
    """The Hub, the URLs of its two databases, and the user these tests sign up."""

    hub: HubProcess
    hub_db: str
    placement_db: str
    user: str
    browser: Browser


@pytest.fixture(scope="module")
def pg_hub(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: str,
    image: str,
    proxy_command: str,
    docker_client: docker.APIClient,
) -> Iterator[PostgresHub]:
    hub_db = postgres.fresh_database(postgres_server, postgres.unique_name("jupyterhub"))
    placement_db = postgres.fresh_database(postgres_server, postgres.unique_name("placement"))
    state = Path(tmp_path_factory.mktemp("hubstate-postgres"))
    hub = HubProcess(
        state_dir=state,
        image=image,
        proxy_command=proxy_command,
        extra_env={"CODEYARD_DATABASE_URL": hub_db, "CODEYARD_PLACEMENT_DB_URL": placement_db},
    )
    user = f"pg{secrets.token_hex(3)}"
    hub.start()
    try:
        yield PostgresHub(hub, hub_db, placement_db, user, Browser(hub.url))
    finally:
        hub.stop()
        for c in docker_client.containers(all=True, filters={"label": f"codeyard.user={user}"}):
            docker_client.remove_container(c["Id"], force=True)
        shutil.rmtree(state / "homes", ignore_errors=True)


def _rows(url: str, sql: str, **params: object) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def test_signup_login_and_token_are_rows_in_postgresql(pg_hub: PostgresHub) -> None:
    hub, user, browser = pg_hub.hub, pg_hub.user, pg_hub.browser
    r = browser.signup(user, PASSWORD)
    assert r.status_code == 200 and "signup was successful" in r.text, r.text[:500]
    assert browser.login(user, PASSWORD).url.endswith("/hub/home")
    r = browser.api("POST", f"/users/{user}/tokens", json={"note": "postgres"})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    me = requests.get(
        f"{hub.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert me.status_code == 200 and me.json()["name"] == user

    assert _rows(pg_hub.hub_db, "SELECT name, admin FROM users WHERE name = :u", u=user) == [
        (user, False)
    ]
    tokens = _rows(
        pg_hub.hub_db,
        "SELECT t.note, t.hashed FROM api_tokens t JOIN users u ON t.user_id = u.id"
        " WHERE u.name = :u AND t.note = 'postgres'",
        u=user,
    )
    assert len(tokens) == 1 and token not in tokens[0][1]  # stored hashed, never plain
    # NativeAuthenticator's sign-up record shares the Hub's database; the password is hashed.
    (stored,) = _rows(pg_hub.hub_db, "SELECT password FROM users_info WHERE username = :u", u=user)
    assert PASSWORD.encode() not in bytes(stored[0])
    # Nothing wrote a SQLite database: not the Hub, and not the LLM gateway, whose ledger
    # (shared by its worker processes on this machine) is a memory-mapped table.
    assert list(hub.state_dir.glob("*.sqlite*")) == []
    assert (hub.state_dir / "llm-audit-ledger").is_file()


def test_the_placement_registry_has_its_own_postgresql_database(pg_hub: PostgresHub) -> None:
    engine = make_engine(pg_hub.placement_db)
    try:
        assert engine.dialect.name == "postgresql"
        tables = set(inspect(engine).get_table_names())
        assert {"servers", "credentials", "placements", "decisions"} <= tables
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    hub_engine = create_engine(pg_hub.hub_db)
    try:
        hub_tables = set(inspect(hub_engine).get_table_names())
    finally:
        hub_engine.dispose()
    assert "users" in hub_tables and "placements" not in hub_tables
    sessions = open_db(pg_hub.placement_db)
    try:
        local = {s["name"]: s for s in Registry(sessions).list_servers()}["local"]
        assert local["endpoint"].startswith("unix://") and local["state"] == "active"
    finally:
        sessions.kw["bind"].dispose()


def test_a_workspace_is_placed_through_postgresql_and_survives_a_hub_restart(
    pg_hub: PostgresHub, docker_client: docker.APIClient
) -> None:
    hub, user = pg_hub.hub, pg_hub.user
    auth = start_workspace(hub, pg_hub.browser, user, WS)
    sessions = open_db(pg_hub.placement_db)
    try:
        (placed,) = Registry(sessions).list_placements(user=user)
    finally:
        sessions.kw["bind"].dispose()
    assert (placed["workspace"], placed["server"]) == (WS, "local")
    assert placed["state"] == "running"
    (spawner,) = _rows(
        pg_hub.hub_db,
        "SELECT s.name, s.state FROM spawners s JOIN users u ON s.user_id = u.id"
        " WHERE u.name = :u AND s.name = :ws",
        u=user,
        ws=WS,
    )
    saved = json.loads(spawner[1])  # JupyterHub keeps spawner state as JSON text
    assert saved["object_name"]  # the container the Hub finds again after a restart
    running = docker_client.containers(filters={"label": f"codeyard.user={user}"})
    assert [c["Names"][0].lstrip("/") for c in running] == [saved["object_name"]]

    hub.stop()
    hub.start()
    after = hub.api_json("GET", f"/users/{user}")
    assert after["servers"][WS]["ready"] is True
    r = requests.get(f"{hub.url}/user/{user}/{WS}/api/status", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
