"""A real PostgreSQL server for the tests: Debian's `postgresql`, in a temp folder, on loopback.

The Hub database and the placement registry run on PostgreSQL at real sites, so the suites
test them there too. One server serves a whole test run: `tests/support/with-postgres.sh CMD`
(`python -m support.postgres CMD`) starts it, exports its admin URL as
`CODEYARD_TEST_POSTGRES_URL`, runs CMD and stops it; `make test` runs every suite under it.
A test run started without it gets a server of its own from the `postgres_server` fixture.

The server is set up like a real site's, only smaller and faster:

- it listens on 127.0.0.1 and a free port only, its unix socket in its own folder;
- every login needs a password (scram-sha-256, a fresh random one per server), so the URLs
  the tests hand to the Hub carry credentials as a site's do;
- durability is off (fsync, synchronous_commit, full_page_writes): a test server's data dies
  with it, and the machine's two cores are shared with the other suites.

Each test gets an empty database of its own from `fresh_database(url, name)`.

Only the standard library is imported at module level, so the wrapper script runs with any
Python 3.11; `fresh_database` needs SQLAlchemy and psycopg (the `hub` extra).

A test module takes the fixture in by name, `postgres_server = postgres.postgres_server`
(a plugin import would come after the module has imported this one, too late for pytest to
rewrite its asserts).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: The admin URL (database `postgres`) of the server a wrapper started for the whole run.
URL_ENV = "CODEYARD_TEST_POSTGRES_URL"
#: The SQLAlchemy driver the project uses for PostgreSQL (psycopg 3).
DRIVER = "postgresql+psycopg"
#: Where Debian installs each major version's server programs.
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
#: The system user Debian's package creates; PostgreSQL refuses to run as root.
SYSTEM_USER = "postgres"
#: The superuser initdb creates, whose password the URLs carry.
SUPERUSER = "postgres"

# Loose durability settings, see the module docstring.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def bin_dir() -> Path:
    """The newest installed server's programs (initdb, pg_ctl, pg_isready), which Debian keeps
    off PATH; `PG_BINDIR` overrides it for other layouts."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    versions = sorted(
        (p for p in DEBIAN_PG_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(
            f"no PostgreSQL server under {DEBIAN_PG_ROOT}: `apt-get install postgresql` "
            "(`make system-deps` does)"
        )
    return versions[-1]


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One PostgreSQL server in its own folder: `start()` runs initdb and starts it, `stop()`
    stops it and removes the folder. As root, every server program runs as `postgres`."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="codeyard-pg-")))
    port: int = field(default_factory=_free_loopback_port)
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    started: bool = False

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def url(self) -> str:
        """The superuser's URL of the `postgres` database, over TCP on loopback."""
        return f"{DRIVER}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, program: str, *args: str) -> list[str]:
        cmd = [str(bin_dir() / program), *args]
        return ["runuser", "-u", SYSTEM_USER, "--", *cmd] if os.geteuid() == 0 else cmd

    def _run(self, program: str, *args: str) -> None:
        out = subprocess.run(
            self._as_owner(program, *args),
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({out.returncode}):\n{out.stdout}\n{self.log_tail()}"
            )

    def start(self, timeout: int = 60) -> None:
        """initdb with a password-only superuser, then start on loopback and wait until it
        accepts connections over TCP."""
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        os.chmod(self.folder, 0o700)
        pwfile = self.folder / "superuser.pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        try:
            self._run(
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
                "--no-sync",
            )
        finally:
            pwfile.unlink()
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            f"-c unix_socket_directories={self.folder}",
            *(f"-c {s}" for s in FAST_SETTINGS),
        ]
        self._run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_path),
            "--wait",
            "--timeout",
            str(timeout),
            "--options",
            " ".join(options),
        )
        self.started = True
        self._run("pg_isready", "--host", "127.0.0.1", "--port", str(self.port), "--timeout", "30")

    def stop(self) -> None:
        """Fast shutdown (open sessions are ended, as at a site's restart), then remove the
        folder."""
        try:
            if self.started:
                self._run("pg_ctl", "stop", "--pgdata", str(self.data_dir), "--mode", "fast")
                self.started = False
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@contextmanager
def running_postgres() -> Iterator[str]:
    """The admin URL of the run's shared server (`CODEYARD_TEST_POSTGRES_URL`) when a wrapper
    started one, else of a server started here and stopped on the way out."""
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    server = PostgresServer()
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def fresh_database(url: str, name: str) -> str:
    """Create the empty database `name` on the server of the admin URL `url`; return its URL
    (same credentials). A database of that name left by an earlier run is dropped first."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def unique_name(prefix: str) -> str:
    """A database name no other test of this run (or a concurrent run) uses."""
    return f"{prefix}_{secrets.token_hex(4)}"


try:
    import pytest
except ImportError:  # the wrapper script's Python needs no pytest
    pass
else:

    @pytest.fixture(scope="session")
    def postgres_server() -> Iterator[str]:
        """Admin URL of a running PostgreSQL: the run's shared one, else one of our own."""
        with running_postgres() as url:
            yield url


def main(argv: list[str]) -> int:
    """`python -m support.postgres CMD...`: run CMD with one server for it (reused when the
    environment already names one) and return CMD's exit status."""
    if not argv:
        print("usage: with-postgres.sh COMMAND [ARG...]", file=sys.stderr)
        return 2
    with running_postgres() as url:
        env = {**os.environ, URL_ENV: url}
        proc = subprocess.Popen(argv, env=env)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the command too (same process group): let it finish first.
            return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
