"""The Store on SQLite: migrations, idempotent batch writes, reads and the audit trace."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from cdb.errors import DataRejectedError, LifecycleError, StoreError
from cdb.events import Alert, EssChange, Fill, Order, OrderUpdate, RiskDecision, Signal
from cdb.lifecycle import State
from cdb.storage import TABLE_NAMES, Store, migrate
from cdb.storage.engine import make_engine, parse_url
from cdb.storage.tables import TABLE_OF, metadata

# --- migrations ---------------------------------------------------------------------


async def test_migrate_creates_every_table_in_an_empty_database(db_url: str) -> None:
    await migrate(db_url)

    engine = make_engine(parse_url(db_url), None)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    await engine.dispose()
    assert tables == {*TABLE_NAMES, "runs", "alembic_version"}
    assert version == "0003"


async def test_migrate_again_changes_nothing(db_url: str, make_chain: Any) -> None:
    await migrate(db_url)
    async with Store(db_url) as store:
        await store.write(make_chain(1).events)

    await migrate(db_url)

    async with Store(db_url) as store:
        assert (await store.counts())["fills"] == 2


async def test_a_failed_migration_leaves_nothing_behind(db_url: str, tmp_path: Path) -> None:
    """Atomic: a clash on the fourth table also undoes the first three."""
    with sqlite3.connect(tmp_path / "cdb.db") as raw:
        raw.execute("CREATE TABLE fills (x INTEGER)")
    raw.close()

    with pytest.raises(StoreError, match=r"migration on .* failed: table fills already exists"):
        await migrate(db_url)

    with sqlite3.connect(tmp_path / "cdb.db") as raw:
        tables = raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    raw.close()
    assert tables == [("fills",)]


async def test_concurrent_migrations_of_one_file_all_succeed(db_url: str) -> None:
    await asyncio.gather(*(migrate(db_url) for _ in range(3)))

    async with Store(db_url) as store:
        assert await store.counts() == dict.fromkeys(TABLE_NAMES, 0)


async def test_migrated_schema_is_what_the_tables_module_describes(db_url: str) -> None:
    """The migrations and ``tables.py`` are written separately; they must not drift."""
    await migrate(db_url)

    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    engine = make_engine(parse_url(db_url), None)
    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    await engine.dispose()
    assert differences == []


@pytest.mark.parametrize("event_type", list(TABLE_OF), ids=lambda t: t.__name__)
def test_each_table_has_exactly_its_events_fields_in_order_then_the_run_id(
    event_type: type,
) -> None:
    fields = [f.name for f in msgspec.structs.fields(event_type)]
    assert [c.name for c in TABLE_OF[event_type].columns] == [*fields, "run_id"]


async def test_a_store_with_a_run_id_writes_it_and_reads_only_its_runs_rows(
    db_url: str, make_chain: Any,
) -> None:
    await migrate(db_url)
    chain = make_chain(1).events
    async with Store(db_url, run_id="a") as a, Store(db_url, run_id="b") as b:
        assert await a.write(chain) == len(chain)
        # The same events again, for another run: rows of their own.
        assert await b.write(chain) == len(chain)
        assert await a.write(chain) == 0
        assert sum((await a.counts()).values()) == len(chain)
        assert {row["run_id"] for row in await b.rows("orders")} == {"b"}
    async with Store(db_url) as every:
        assert sum((await every.counts()).values()) == 2 * len(chain)


async def test_sqlite_runs_in_wal_mode_with_normal_sync(db_url: str, tmp_path: Path) -> None:
    await migrate(db_url)
    with sqlite3.connect(tmp_path / "cdb.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()
    engine = make_engine(parse_url(db_url), None)
    async with engine.connect() as conn:
        synchronous = (await conn.execute(text("PRAGMA synchronous"))).scalar()
    await engine.dispose()
    assert synchronous == 1  # NORMAL


async def test_an_in_memory_store_migrates_itself(make_chain: Any) -> None:
    async with Store("sqlite+aiosqlite://") as store:
        await store.migrate()
        assert await store.write(make_chain(1).events) == 5


# --- writes -------------------------------------------------------------------------


async def test_rewriting_a_batch_adds_no_row(store: Store, make_chain: Any) -> None:
    events = make_chain(1).events + make_chain(2, rejected=True).events

    first = await store.write(events)
    again = await store.write(events)

    assert (first, again) == (len(events), 0)
    assert await store.counts() == {
        "signals": 2, "risk_decisions": 1, "orders": 1, "fills": 2, "order_updates": 1,
        "alerts": 0, "ess_changes": 0, "order_cancels": 0,
    }  # fmt: skip


async def test_a_partly_known_batch_counts_only_new_rows(store: Store, make_chain: Any) -> None:
    await store.write(make_chain(1).events)

    inserted = await store.write(make_chain(1).events + make_chain(2).events)

    assert inserted == len(make_chain(2).events)


async def test_an_event_twice_in_one_batch_is_stored_once(store: Store, make_chain: Any) -> None:
    fill = make_chain(1).fills[0]

    assert await store.write([fill, fill]) == 1
    assert await store.read(Fill) == [fill]


async def test_a_mixed_batch_lands_in_every_table_and_trades_are_skipped(
    store: Store, make_chain: Any
) -> None:
    chain, rejected = make_chain(1), make_chain(2, rejected=True)
    batch = [
        chain.trade,
        *chain.events,
        *rejected.events,
        chain.alert(),
        chain.ess(),
        rejected.trade,
    ]

    inserted = await store.write(batch)

    assert inserted == len(batch) - 2
    assert await store.read(Signal) == [chain.signal, rejected.signal]
    assert await store.read(RiskDecision) == [rejected.decision]
    assert await store.read(Order) == [chain.order]
    assert await store.read(Fill) == chain.fills
    assert await store.read(OrderUpdate) == chain.updates
    assert await store.read(Alert) == [make_chain(1).alert()]
    assert await store.read(EssChange) == [make_chain(1).ess()]


async def test_a_batch_of_trades_only_writes_nothing(store: Store, make_chain: Any) -> None:
    assert await store.write([make_chain(1).trade]) == 0
    assert await store.write([]) == 0
    assert sum((await store.counts()).values()) == 0


async def test_values_round_trip_exactly(store: Store, make_chain: Any) -> None:
    """Fixed-point integers, booleans, signs and text come back as written."""
    order = msgspec.structs.replace(
        make_chain(1).order, qty_e8=9_223_372_036_854_775_807, client_order_id="cdb-ü-1"
    )
    await store.write([order, make_chain(1).signal])

    assert await store.read(Order) == [order]
    assert (await store.read(Signal))[0].move_bp == -312
    row = (await store.rows("orders"))[0]
    assert row["reduce_only"] is True
    assert row["price_e8"] == make_chain.PRICE


async def test_a_failed_batch_leaves_no_row(store: Store, tmp_path: Path, make_chain: Any) -> None:
    """One transaction: the signals are not kept when the fills cannot be written."""
    with sqlite3.connect(tmp_path / "cdb.db") as raw:
        raw.execute("DROP TABLE fills")
    raw.close()

    with pytest.raises(StoreError, match=r"write of 1 signals, 1 orders, 2 fills.*no such table"):
        await store.write(make_chain(1).events)

    assert await store.rows("signals") == []


async def test_concurrent_overlapping_writes_store_each_event_once(
    store: Store, make_chain: Any
) -> None:
    """Redeliveries racing the first delivery (several db_writer consumers)."""
    chains = [make_chain(n) for n in range(12)]
    batches = [[e for c in chains[i : i + 4] for e in c.events] for i in range(0, 12, 2)]

    inserted = await asyncio.gather(*(store.write(b) for b in batches))

    assert sum(inserted) == sum(len(c.events) for c in chains)
    assert (await store.counts())["fills"] == 2 * len(chains)


async def test_write_refuses_objects_that_are_not_events(store: Store) -> None:
    with pytest.raises(TypeError, match="not a persisted event"):
        await store.write(["fill-1"])  # type: ignore[list-item]


async def test_data_the_database_refuses_is_a_data_rejected_error(
    store: Store, make_chain: Any
) -> None:
    alert = msgspec.structs.replace(make_chain(1).alert(), message=None)
    with pytest.raises(DataRejectedError, match="NOT NULL constraint failed"):
        await store.write([make_chain(2).signal, alert])
    assert (await store.counts())["signals"] == 0, "nothing of the batch is written"


async def test_open_migrated_upgrades_then_opens(db_url: str, make_chain: Any) -> None:
    async with Store.open_migrated(db_url, run_id="r1") as store:
        assert store.state is State.RUNNING
        assert await store.write(make_chain(1).events) > 0
    assert store.state is State.STOPPED


# --- reads and trace ----------------------------------------------------------------


@pytest.mark.parametrize(
    "pick",
    [
        lambda c: c.trade.id,
        lambda c: c.signal.id,
        lambda c: c.order.id,
        lambda c: c.fills[1].id,
        lambda c: c.updates[0].id,
    ],
    ids=["trade", "signal", "order", "fill", "order_update"],
)
async def test_trace_from_any_id_of_a_chain_gives_the_whole_chain(
    store: Store, pick: object, make_chain: Any
) -> None:
    chain = make_chain(7)
    await store.write(make_chain(6).events + chain.events + make_chain(8).events)

    steps = await store.trace(pick(chain))  # type: ignore[operator]

    assert [(s.kind, s.id) for s in steps] == [
        ("trade", chain.trade.id),
        ("signal", chain.signal.id),
        ("order", "ord-7"),
        ("fill", "fill-7-0"),
        ("fill", "fill-7-1"),
        ("order_update", "upd-7"),
    ]
    assert steps[0].ts == chain.signal.ts  # the trade as the signal recorded it
    assert [s.causation_id for s in steps[1:]] == [
        chain.trade.id, chain.signal.id, "ord-7", "ord-7", "ord-7",
    ]  # fmt: skip
    latencies = [b.ts - a.ts for a, b in itertools.pairwise(steps)]
    assert latencies == [0, 1_000, 1_000, 1_000, 2_000]
    assert "30123.45" in steps[0].summary
    assert "0.015 BTCUSDT at 30123.45" in steps[3].summary


async def test_trace_of_a_rejected_signal_shows_the_decision(store: Store, make_chain: Any) -> None:
    chain = make_chain(3, rejected=True)
    await store.write(chain.events)

    steps = await store.trace(chain.signal.id)

    assert [s.kind for s in steps] == ["trade", "signal", "risk_decision"]
    assert "rejected BUY BTCUSDT: max_exposure" in steps[2].summary


async def test_trace_includes_alerts_and_ess_changes_of_the_trade(
    store: Store, make_chain: Any
) -> None:
    await store.write([*make_chain(1).events, make_chain(1).alert(), make_chain(1).ess()])

    kinds = [s.kind for s in await store.trace("ess-1")]

    assert kinds == [
        "trade",
        "signal",
        "alert",
        "ess_change",
        "order",
        "fill",
        "fill",
        "order_update",
    ]


async def test_trace_without_a_signal_dates_the_trade_by_its_first_effect(
    store: Store, make_chain: Any
) -> None:
    """An ESS trip straight from a trade (flash crash): no signal recorded the trade."""
    chain = make_chain(1)
    await store.write([chain.alert(), chain.ess()])

    steps = await store.trace(chain.trade.id)

    assert [(s.kind, s.ts) for s in steps] == [
        ("trade", chain.alert().ts), ("alert", chain.alert().ts), ("ess_change", chain.ess().ts),
    ]  # fmt: skip
    assert steps[0].summary == "not stored; started alert-1"


async def test_trace_of_an_unknown_id_is_empty(store: Store, make_chain: Any) -> None:
    await store.write(make_chain(1).events)

    assert await store.trace("binance:BTCUSDT:999") == []


async def test_counts_name_every_table(store: Store) -> None:
    assert await store.counts() == dict.fromkeys(TABLE_NAMES, 0)


async def test_rows_of_an_unknown_table_is_an_error(store: Store) -> None:
    with pytest.raises(ValueError, match="no table 'trades'; tables are signals"):
        await store.rows("trades")


# --- errors and lifecycle -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "invalid database URL 'not a url'"),
        ("mysql://cdb@localhost/cdb", "unsupported database URL 'mysql://cdb@localhost/cdb'"),
    ],
)
def test_a_bad_url_is_a_store_error_that_shows_good_ones(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        Store(url)
    assert "sqlite+aiosqlite:///PATH" in str(caught.value)


def test_a_schema_on_sqlite_is_refused() -> None:
    with pytest.raises(StoreError, match="schema 'run1' needs PostgreSQL"):
        Store("sqlite:///cdb.db", schema="run1")


def test_the_password_never_appears_in_messages() -> None:
    store = Store("postgresql://cdb:s3cret@db.example:5432/cdb")
    assert "s3cret" not in repr(store)
    assert store.where == "postgresql+asyncpg://cdb:***@db.example:5432/cdb"


@pytest.mark.parametrize("parent", ["missing", "a-file"])
async def test_an_unwritable_path_is_a_store_error_that_says_why(
    tmp_path: Path, make_chain: Any, parent: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    url = f"sqlite+aiosqlite:///{tmp_path / parent / 'cdb.db'}"
    why = rf"unable to open database file: directory .*{parent} is missing or not writable"

    with pytest.raises(StoreError, match=rf"migration on .*{parent}/cdb.db failed: {why}"):
        await migrate(url)
    async with Store(url) as store:
        with pytest.raises(StoreError, match=r"\(create the directory, or point the URL at"):
            await store.write(make_chain(1).events)


async def test_an_unmigrated_database_says_to_migrate(db_url: str, make_chain: Any) -> None:
    async with Store(db_url) as store:
        with pytest.raises(StoreError, match=r"run cdb\.storage\.migrate"):
            await store.write(make_chain(1).events)


async def test_a_store_runs_once(db_url: str, make_chain: Any) -> None:
    store = Store(db_url)
    assert store.state is State.CREATED
    with pytest.raises(LifecycleError, match="inside `async with`"):
        await store.counts()

    async with store:
        assert store.state is State.RUNNING
    assert store.state is State.STOPPED

    with pytest.raises(LifecycleError, match="cannot be started again"):
        await store.__aenter__()
    with pytest.raises(LifecycleError):
        await store.write(make_chain(1).events)


async def test_unfinished_orders_are_found_by_the_database(store: Store) -> None:
    from tests.integration.storage.test_store_postgres import orders_in_every_state

    events, unfinished, fill_ids = orders_in_every_state()
    await store.write(events)
    orders, found = await store.unfinished_orders(["FILLED", "CANCELED", "REJECTED", "EXPIRED"])
    assert [o.id for o in orders] == unfinished
    assert {fill_id for _, fill_id, _ in found} == fill_ids


async def test_orders_in_play_and_streamed_reads(store: Store) -> None:
    from tests.integration.storage.test_store_postgres import check_orders_in_play_and_stream

    await check_orders_in_play_and_stream(store)


async def test_a_session_store_writes_its_id_reads_every_row_and_opens_once(
    db_url: str, make_chain: Any,
) -> None:
    """The distributed mode: one continuous session per namespace."""
    from cdb.storage.runs import RunRecord, session_id

    await migrate(db_url)
    session = session_id("prod")
    async with Store(db_url, run_id="older") as older:
        await older.write(make_chain(1).events)
    async with Store(db_url, run_id=session, scoped=False) as store:
        first = await store.open_session(RunRecord(run_id=session, kind="distributed",
                                                   started_ns=1))
        again = await store.open_session(RunRecord(run_id=session, kind="distributed",
                                                   started_ns=2))
        assert again.started_ns == first.started_ns == 1
        await store.write(make_chain(2).events)
        assert {row["run_id"] for row in await store.rows("orders")} == {"older", session}
        assert (await store.latest_run(("distributed",))) == first
