"""How rows of one event type are inserted: the bulk, idempotent half of ``Store.write``."""

from __future__ import annotations

import msgspec
from sqlalchemy import Dialect, Table
from sqlalchemy.dialects import postgresql, sqlite

from cdb.errors import StoreError
from cdb.events import Event


class Insert:
    """How rows of one event type are inserted: ``INSERT ... ON CONFLICT (id, run_id) DO
    NOTHING``.

    On SQLite the statement is compiled once and run through the driver's executemany
    with tuples, whose rowcount is exact and which skips binding dicts through
    SQLAlchemy on every row. asyncpg's executemany has no rowcount, so on
    PostgreSQL SQLAlchemy sends multi-row VALUES with RETURNING, which counts the new
    rows.
    """

    __slots__ = ("sql", "statement", "table")

    def __init__(self, event_type: type[Event], table: Table, dialect: Dialect) -> None:
        fields = [f.name for f in msgspec.structs.fields(event_type)]
        columns = [c.name for c in table.columns][:-1]  # the last is run_id, not a field
        # Rows are built positionally from the struct: a table that drifted from its
        # event must stop the Store at start, not shift values into wrong columns.
        if fields != columns:
            raise StoreError(
                f"table {table.name} has columns {columns} but {event_type.__name__} has "
                f"fields {fields}: update cdb.storage.tables and add a migration"
            )
        insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        statement = insert(table).on_conflict_do_nothing(
            index_elements=[table.c.id, table.c.run_id])
        self.table = table
        self.statement = statement.returning(table.c.id)
        self.sql: str | None = None
        if dialect.name == "sqlite":
            compiled = statement.compile(dialect=dialect)
            if compiled.positiontup != [*fields, "run_id"]:
                raise StoreError(f"unexpected parameter order inserting into {table.name}")
            self.sql = str(compiled)
