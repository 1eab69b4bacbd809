"""The Store: idempotent batch writes of events, and the reads the CLI, probes and
tests need (counts, audit trace, rows).

A batch is written in one transaction, one bulk ``INSERT ... ON CONFLICT (id) DO
NOTHING`` per table, so a redelivered event never makes a second row and a batch is
either all durable or not at all: the db_writer acknowledges only after ``write``
returns. A write cancelled half-way is simply rolled back; redoing it is harmless. A
write whose data the database refuses raises ``DataRejectedError``, not ``StoreError``:
retrying it cannot help.

A process opens its database with ``Store.open_migrated``: the schema upgraded first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import msgspec
from sqlalchemy import Table, and_, func, literal, or_, select, true, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from cdb.errors import DataRejectedError, LifecycleError, StoreError
from cdb.events import AnyEvent, Event, Fill, Order, OrderUpdate, Trade
from cdb.lifecycle import State
from cdb.storage import engine as _engine
from cdb.storage.engine import migrate
from cdb.storage.insert import Insert
from cdb.storage.runs import RunRecord
from cdb.storage.tables import EVENT_OF, TABLE_NAMES, TABLE_OF, runs
from cdb.storage.trace import TraceStep, steps_of

__all__ = ["RunRecord", "Store", "TraceStep", "latest_run_id", "migrate"]

E = TypeVar("E", bound=Event)

_asdict: Final = msgspec.structs.asdict
_astuple: Final = msgspec.structs.astuple


def _unfinished(final: Sequence[str]) -> ColumnElement[bool]:
    """Orders with neither an update nor a fill in a ``final`` status."""
    o, u, f = TABLE_OF[Order], TABLE_OF[OrderUpdate], TABLE_OF[Fill]
    return and_(o.c.id.not_in(select(u.c.order_id).where(u.c.status.in_(final))),
                o.c.id.not_in(select(f.c.order_id).where(f.c.order_status.in_(final))))


class Store:
    """The event database (SQLite or PostgreSQL) as an async context manager.

    Args:
        url: ``sqlite+aiosqlite:///PATH`` or ``postgresql+asyncpg://USER@HOST:PORT/DB``
            (``sqlite://`` and ``postgresql://`` are mapped to those drivers).
        schema: PostgreSQL schema holding this pipeline's tables (its namespace);
            ``None`` or ``""`` for the connection's default.
        run_id: the run this Store writes for and reads from: every row written
            carries it, every read sees only its rows. ``None``: rows are written with
            the run id ``""`` and reads see every run.
        scoped: ``False``: write ``run_id`` but read every row (the distributed mode:
            its namespace is one continuous session, whatever wrote before it).

    Raises:
        StoreError: the URL or schema cannot be used (at construction); any database
            failure later, naming the operation and the database.
        DataRejectedError: ``write`` of data the database refuses (a constraint, a value
            out of range).
    """

    def __init__(self, url: str, schema: str | None = None, *, run_id: str | None = None,
                 scoped: bool = True) -> None:
        self._url = _engine.parse_url(url)
        self.run_id = run_id
        self._scope = run_id if scoped else None
        self._schema = _engine.check_schema(self._url, schema)
        self._where = _engine.describe(self._url, self._schema)
        self._state = State.CREATED
        self._engine: AsyncEngine | None = None
        self._inserts: dict[type[Event], Insert] = {}
        self._positional = False

    def __repr__(self) -> str:
        return f"Store({self._where!r}, state={self._state.value})"

    def _mine(self, table: Table) -> ColumnElement[bool]:
        """Rows of this Store's run (all rows when it has none)."""
        return true() if self._scope is None else table.c.run_id == self._scope

    @property
    def state(self) -> State:
        return self._state

    @property
    def where(self) -> str:
        """The database (and schema) for messages, without the password."""
        return self._where

    async def __aenter__(self) -> Self:
        if self._state is not State.CREATED:
            raise LifecycleError(f"{self!r} cannot be started again; create a new Store")
        engine = _engine.make_engine(self._url, self._schema)
        self._inserts = {
            event_type: Insert(event_type, table, engine.dialect)
            for event_type, table in TABLE_OF.items()
        }
        self._positional = engine.dialect.name == "sqlite"
        self._engine = engine
        self._state = State.RUNNING
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = State.STOPPING
        try:
            if self._engine is not None:
                # Shielded: a cancelled stop must still close connections (aiosqlite
                # runs each in a thread that would otherwise outlive the loop).
                await asyncio.shield(self._engine.dispose())
        finally:
            self._engine = None
            self._state = State.STOPPED

    def _running(self, action: str) -> AsyncEngine:
        if self._engine is None or self._state is not State.RUNNING:
            raise LifecycleError(f"{action} on {self!r}: use the Store inside `async with`")
        return self._engine

    @classmethod
    @asynccontextmanager
    async def open_migrated(cls, url: str, schema: str | None = None, *,
                            run_id: str | None = None, scoped: bool = True
                            ) -> AsyncIterator[Self]:
        """A running Store on ``url`` whose database was first upgraded to the newest
        schema (``migrate``): the one way a process opens its database of record."""
        await migrate(url, schema)
        async with cls(url, schema, run_id=run_id, scoped=scoped) as store:
            yield store

    @asynccontextmanager
    async def _connect(self, action: str, *, begin: bool = False,
                       refusable: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (a transaction with ``begin``); failures become ``StoreError``,
        or ``DataRejectedError`` for data the database refuses when ``refusable``."""
        engine = self._running(action)
        try:
            async with engine.begin() if begin else engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            error = _engine.store_error(action, self._where, exc)
            if refusable and isinstance(exc, IntegrityError | DataError):
                raise DataRejectedError(str(error)) from exc
            raise error from exc

    async def migrate(self) -> None:
        """Upgrade this Store's database to the newest schema (see ``migrate``)."""
        await _engine.upgrade(self._running("migrate"), self._schema, self._where)

    async def ping(self) -> None:
        """Round-trip to the database; ``StoreError`` if it does not answer."""
        async with self._connect("ping") as conn:
            await conn.execute(select(literal(1)))

    async def write(self, events: Sequence[AnyEvent]) -> int:
        """Persist ``events`` in one transaction; returns the rows actually inserted.

        Events already stored (same id, also twice in one batch) are skipped and not
        counted, so a redelivered batch returns 0. ``Trade`` events are not persisted
        and not counted.

        Raises:
            StoreError: nothing of the batch was written.
            DataRejectedError: the database refused the data (nothing was written).
            TypeError: an object that is not a cdb event.
        """
        self._running("write")
        inserts = self._inserts
        run_id = self.run_id or ""
        tail = (run_id,)
        if self._positional:
            def row_of(event: Event) -> Any:
                return _astuple(event) + tail
        else:
            def row_of(event: Event) -> Any:
                row = _asdict(event)
                row["run_id"] = run_id
                return row
        groups: dict[type[Event], list[Any]] = {}
        for event in events:
            cls = type(event)
            group = groups.get(cls)
            if group is None:
                if cls not in inserts:
                    if cls is Trade:
                        continue
                    raise TypeError(f"Store.write got a {cls.__name__}, not a persisted event")
                group = groups[cls] = []
            group.append(row_of(event))
        if not groups:
            return 0
        inserted = 0
        action = "write of " + ", ".join(
            f"{len(rows)} {inserts[kind].table.name}" for kind, rows in groups.items()
        )
        async with self._connect(action, begin=True, refusable=True) as conn:
            for kind, rows in groups.items():
                insert = inserts[kind]
                if insert.sql is None:
                    result = await conn.execute(insert.statement, rows)
                    inserted += len(result.all())
                else:
                    inserted += (await conn.exec_driver_sql(insert.sql, rows)).rowcount
        return inserted

    async def counts(self) -> dict[str, int]:
        """Rows per table, every table included."""
        query = union_all(
            *(
                select(literal(table.name).label("name"), func.count().label("n"))
                .select_from(table).where(self._mine(table))
                for table in TABLE_OF.values()
            )
        )
        async with self._connect("counts") as conn:
            result = await conn.execute(query)
            found = {str(name): int(n) for name, n in result}
        return {name: found.get(name, 0) for name in TABLE_NAMES}

    async def read(self, event_type: type[E]) -> list[E]:
        """Every stored event of ``event_type``, by ts then id."""
        table = TABLE_OF.get(event_type)
        if table is None:
            raise ValueError(f"{event_type.__name__} events are not stored")
        async with self._connect(f"read of {table.name}") as conn:
            result = await conn.execute(
                select(table).where(self._mine(table)).order_by(table.c.ts, table.c.id))
            return [msgspec.convert(row, event_type, from_attributes=True) for row in result]

    async def stream(self, event_type: type[E], *, chunk: int = 10_000
                     ) -> AsyncIterator[list[E]]:
        """Every stored event of ``event_type`` by ts then id, ``chunk`` at a time: a
        table of any size is read with memory for one chunk."""
        table = TABLE_OF[event_type]
        # A transaction: PostgreSQL keeps a server-side cursor only inside one.
        async with self._connect(f"read of {table.name}", begin=True) as conn:
            result = await conn.stream(
                select(table).where(self._mine(table)).order_by(table.c.ts, table.c.id))
            async for rows in result.partitions(chunk):
                yield [msgspec.convert(row, event_type, from_attributes=True) for row in rows]

    async def orders_in_play(self, final: Sequence[str], newest: int
                             ) -> tuple[list[Order], list[OrderUpdate]]:
        """The orders that can still matter to risk after a restart (by ts): every one
        not finished (no update or fill in a ``final`` status) and the ``newest`` ones
        whatever their state (recent decisions and order rate); and the updates of
        those orders."""
        o, u = TABLE_OF[Order], TABLE_OF[OrderUpdate]
        latest = (select(o.c.id).where(self._mine(o))
                  .order_by(o.c.ts.desc(), o.c.id.desc()).limit(newest))
        chosen = and_(self._mine(o),
                      or_(o.c.id.in_(latest.scalar_subquery()), _unfinished(final)))
        async with self._connect("read of the orders in play") as conn:
            rows = await conn.execute(select(o).where(chosen).order_by(o.c.ts, o.c.id))
            orders = [msgspec.convert(row, Order, from_attributes=True) for row in rows]
            found = await conn.execute(
                select(u).where(u.c.order_id.in_(select(o.c.id).where(chosen)))
                .order_by(u.c.ts, u.c.id))
            updates = [msgspec.convert(row, OrderUpdate, from_attributes=True) for row in found]
        return orders, updates

    async def unfinished_orders(self, final: Sequence[str]
                                ) -> tuple[list[Order], list[tuple[str, str, int]]]:
        """Orders with neither an update nor a fill in a ``final`` status (by ts), and
        the fills recorded for them as (order id, venue fill id, quantity): what an
        execution restart must resolve, found by the database rather than by reading
        every table."""
        o, f = TABLE_OF[Order], TABLE_OF[Fill]
        open_orders = select(o).where(self._mine(o), _unfinished(final))
        async with self._connect("read of the unfinished orders") as conn:
            rows = await conn.execute(open_orders.order_by(o.c.ts, o.c.id))
            orders = [msgspec.convert(row, Order, from_attributes=True) for row in rows]
            ids = [order.id for order in orders]
            fills: list[tuple[str, str, int]] = []
            for start in range(0, len(ids), 1000):  # bounded IN lists
                found = await conn.execute(
                    select(f.c.order_id, f.c.venue_fill_id, f.c.qty_e8)
                    .where(f.c.order_id.in_(ids[start:start + 1000]))
                    .order_by(f.c.ts, f.c.id))
                fills += [(str(o_id), str(fill_id), int(qty)) for o_id, fill_id, qty in found]
        return orders, fills

    async def traded_since(self, ts_ns: int) -> tuple[set[str], set[str]]:
        """Symbols of the orders and ``venue_fill_id`` of the fills from ``ts_ns`` on."""
        o, f = TABLE_OF[Order], TABLE_OF[Fill]
        async with self._connect("read of the recent trading") as conn:
            symbols = set((await conn.execute(
                select(o.c.symbol).where(self._mine(o), o.c.ts >= ts_ns).distinct())).scalars())
            fill_ids = set((await conn.execute(
                select(f.c.venue_fill_id).where(self._mine(f), f.c.ts >= ts_ns))).scalars())
        return symbols, fill_ids

    async def latest_client_ids(self, window_ns: int) -> set[str]:
        """Client order ids of the orders within ``window_ns`` of the newest one (event
        time: a replay's orders are as recent as a live run's)."""
        o = TABLE_OF[Order]
        newest = select(func.max(o.c.ts)).where(self._mine(o)).scalar_subquery()
        async with self._connect("read of the latest orders") as conn:
            found = await conn.execute(
                select(o.c.client_order_id).where(self._mine(o), o.c.ts >= newest - window_ns))
            return {str(cid) for cid in found.scalars()}

    async def rows(self, table: str) -> list[dict[str, object]]:
        """Every row of ``table`` (a name from ``TABLE_NAMES``), by ts then id."""
        if table not in EVENT_OF:
            raise ValueError(f"no table {table!r}; tables are {', '.join(TABLE_NAMES)}")
        t = TABLE_OF[EVENT_OF[table]]
        async with self._connect(f"read of {table}") as conn:
            result = await conn.execute(select(t).where(self._mine(t)).order_by(t.c.ts, t.c.id))
            return [dict(row) for row in result.mappings()]

    async def save_run(self, record: RunRecord) -> None:
        """Insert or replace the row of ``record.run_id`` in ``runs``."""
        row = msgspec.structs.asdict(record)
        async with self._connect(f"write of run {record.run_id}", begin=True) as conn:
            await conn.execute(runs.delete().where(runs.c.run_id == record.run_id))
            await conn.execute(runs.insert().values(**row))

    async def runs(self) -> list[RunRecord]:
        """Every run, oldest first (without their series, which can be large)."""
        columns = [c for c in runs.c if c.name != "series"]
        async with self._connect("read of runs") as conn:
            found = await conn.execute(select(*columns).order_by(runs.c.started_ns,
                                                                 runs.c.run_id))
            return [_run_record({**row._asdict(), "series": ""}) for row in found]

    async def open_session(self, record: RunRecord) -> RunRecord:
        """The row of ``record.run_id``, inserted as ``record`` if there is none yet
        (several processes may open one session at once: the first one wins)."""
        insert = (postgresql.insert if self._running("open_session").dialect.name
                  == "postgresql" else sqlite.insert)
        statement = insert(runs).values(**msgspec.structs.asdict(record))
        async with self._connect(f"open of session {record.run_id}", begin=True) as conn:
            await conn.execute(statement.on_conflict_do_nothing(index_elements=[runs.c.run_id]))
        return await self.run(record.run_id) or record

    async def latest_run(self, kinds: Sequence[str] = ()) -> RunRecord | None:
        """The run (of one of ``kinds``, default any) that started or ended last."""
        found = [r for r in await self.runs() if not kinds or r.kind in kinds]
        return max(found, key=lambda r: (max(r.started_ns, r.finished_ns), r.run_id),
                   default=None)

    async def run(self, run_id: str) -> RunRecord | None:
        """The run ``run_id`` (a unique prefix is enough), or None."""
        async with self._connect(f"read of run {run_id}") as conn:
            found = [row._asdict() for row in await conn.execute(
                select(runs).where(runs.c.run_id.startswith(run_id, autoescape=True))
                .order_by(runs.c.run_id).limit(2))]
        exact = [row for row in found if row["run_id"] == run_id]
        if exact or len(found) == 1:
            return _run_record((exact or found)[0])
        return None

    async def trace(self, event_id: str) -> list[TraceStep]:
        """The whole chain ``event_id`` belongs to, ordered by ts; empty if unknown.

        ``event_id`` may be the id of any stored event or of the trade that started a
        chain. The chain is every event with that trade as correlation id, within one
        run: this Store's, or else the newest run that holds the event (two runs of one
        file see the same trades). Trades are not stored: the trade appears as the
        signal recorded it (its id, the signal's ts and reference price).
        """
        tables = list(TABLE_OF.values())
        lookup = union_all(*(
            select(t.c.correlation_id, t.c.run_id, t.c.ts).where(
                self._mine(t), or_(t.c.id == event_id, t.c.correlation_id == event_id))
            for t in tables
        )).subquery()
        events: list[Event] = []
        async with self._connect(f"trace of {event_id}") as conn:
            newest = await conn.execute(
                select(lookup.c.correlation_id, lookup.c.run_id)
                .order_by(lookup.c.run_id.desc(), lookup.c.ts.desc()).limit(1))
            found = newest.first()
            if found is None:
                return []
            correlation_id, run_id = str(found[0]), str(found[1])
            for event_type, table in TABLE_OF.items():
                result = await conn.execute(
                    select(table).where(table.c.correlation_id == correlation_id,
                                        table.c.run_id == run_id)
                )
                events.extend(
                    msgspec.convert(row, event_type, from_attributes=True) for row in result
                )
        if not events:
            return []
        return steps_of(correlation_id, events)


def _run_record(row: dict[str, Any]) -> RunRecord:
    # Column names are SQLAlchemy's str subclass, which msgspec does not take as keys.
    return msgspec.convert({str(k): v for k, v in row.items()}, RunRecord)


async def latest_run_id(url: str, schema: str | None = None) -> str | None:
    """The id of the database's latest run; None when it has none (or no runs table):
    what the ESS commands act on, since a run's ESS is its own."""
    async with Store(url, schema) as store:
        try:
            latest = await store.latest_run(("synthetic", "replay", "live"))
        except StoreError:
            return None
    return None if latest is None else latest.run_id
