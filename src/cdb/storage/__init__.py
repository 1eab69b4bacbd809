"""The database: event tables, migrations and the Store (SQLite or PostgreSQL).

::

    await migrate(url, schema)            # once per deployment or start; idempotent
    async with Store(url, schema) as store:
        await store.write(events)         # one transaction, duplicates skipped
"""

from cdb.storage.engine import migrate
from cdb.storage.store import Store, StoreState, TraceStep
from cdb.storage.tables import TABLE_NAMES

__all__ = ["TABLE_NAMES", "Store", "StoreState", "TraceStep", "migrate"]
