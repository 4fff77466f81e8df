"""Alembic environment of the central audit (run through `codeyard.central_audit.database`).

Its revision lives in `codeyard_audit_alembic_version`, so this history never touches the
Hub's or the placement registry's when they share one database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from codeyard.central_audit.database import VERSION_TABLE
from codeyard.central_audit.models import Base

config = context.config
target_metadata = Base.metadata


def _include(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """Autogenerate looks only at this history's tables, not at its neighbours'."""
    return type_ != "table" or str(name).startswith("codeyard_audit_")


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        version_table=VERSION_TABLE,
        include_object=_include,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: no sqlalchemy.url and no connection given")
    engine = create_engine(url)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        version_table=VERSION_TABLE,
        include_object=_include,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
