"""Reading the pipeline's database for probes and the final recording."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cdb.errors import StoreError
from cdb.storage import engine as _engine
from cdb.storage.store import Store
from cdb.storage.tables import TABLE_NAMES


class SqlReader:
    """Raw SQL on one database and schema (the namespace's), for ``sql`` probes.

    Args:
        url: the database URL.
        schema: the PostgreSQL schema of the namespace (None for SQLite).
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        self._url = _engine.parse_url(url)
        self._schema = schema
        self._engine: AsyncEngine | None = None

    async def query(self, text: str) -> list[dict[str, Any]]:
        if self._engine is None:
            self._engine = _engine.make_engine(self._url, None)
        try:
            async with self._engine.connect() as conn:
                if self._schema:
                    # Raw SQL does not go through schema_translate_map: name the schema.
                    await conn.exec_driver_sql(f'SET search_path TO "{self._schema}"')
                result = await conn.exec_driver_sql(text)
                if not result.returns_rows:
                    return []
                return [dict(row) for row in result.mappings()]
        except (SQLAlchemyError, OSError) as exc:
            raise _engine.store_error("sql probe", _engine.describe(self._url, self._schema),
                                      exc) from exc

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


async def snapshot(url: str, schema: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every event table, every row (ordered by ts, id)."""
    out: dict[str, list[dict[str, Any]]] = {}
    async with Store(url, schema=schema) as store:
        for table in TABLE_NAMES:
            try:
                out[table] = await store.rows(table)
            except StoreError:
                out[table] = []
    return out
