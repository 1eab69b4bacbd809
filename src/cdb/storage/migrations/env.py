"""Alembic environment of cdb's own migrations.

``cdb.storage.migrate`` runs it on a connection it opened (``config.attributes``
carries ``connection`` and ``schema``), inside a transaction it owns, so a migration
and its version row commit together. Run by the ``alembic`` command instead (a
developer writing a revision, with ``sqlalchemy.url`` set), it opens its own async
engine.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from cdb.storage.tables import metadata

VERSION_TABLE = "alembic_version"


def _run(connection: Connection, schema: str | None) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # The version table lives with the tables it describes, so each namespace
        # migrates on its own.
        version_table_schema=schema,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run, None)
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("cdb migrations run online only: use cdb.storage.migrate(url)")
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("set sqlalchemy.url, or run cdb.storage.migrate(url)")
        asyncio.run(_run_standalone(url))
    else:
        _run(connection, config.attributes.get("schema"))


_main()
