"""The database: event tables, migrations and the Store (SQLite or PostgreSQL).

::

    async with Store.open_migrated(url, schema) as store:   # upgraded, then opened
        await store.write(events)         # one transaction, duplicates skipped
"""

from cdb.storage.engine import migrate
from cdb.storage.store import Store
from cdb.storage.tables import TABLE_NAMES
from cdb.storage.trace import TraceStep

__all__ = ["TABLE_NAMES", "Store", "TraceStep", "migrate"]
