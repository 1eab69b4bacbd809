"""The Store on a real PostgreSQL: namespaces as schemas, idempotent writes, trace,
and riding out a server restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from cdb.errors import StoreError
from cdb.events import AnyEvent, Fill
from cdb.storage import TABLE_NAMES, Store, migrate
from cdb.storage.tables import metadata
from cdb.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration

MakeChain = Callable[[int], list[AnyEvent]]


async def _tables_by_schema(url: str) -> dict[str, set[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            )
            found: dict[str, set[str]] = {}
            for table_schema, table_name in result:
                found.setdefault(table_schema, set()).add(table_name)
            return found
    finally:
        await engine.dispose()


async def test_migrations_in_two_schemas_coexist(
    postgres_server: PostgresServer, schema: str, make_chain: MakeChain
) -> None:
    """Each namespace has its own tables and version table; nothing lands in public."""
    other = f"{schema}_b"
    # Concurrently, and one of them twice: starting services may all migrate at once.
    await asyncio.gather(
        migrate(postgres_server.url, schema),
        migrate(postgres_server.url, other),
        migrate(postgres_server.url, schema),
    )

    tables = await _tables_by_schema(postgres_server.url)
    expected = {*TABLE_NAMES, "runs", "alembic_version"}
    assert tables[schema] == expected
    assert tables[other] == expected
    assert not tables.get("public", set()) & expected

    async with (
        Store(postgres_server.url, schema) as mine,
        Store(postgres_server.url, other) as theirs,
    ):
        await mine.write(make_chain(1))
        assert (await mine.counts())["fills"] == 2
        assert await theirs.counts() == dict.fromkeys(TABLE_NAMES, 0)
        assert await theirs.trace("fill-1-0") == []


async def test_migrating_again_keeps_the_data(
    postgres_server: PostgresServer, schema: str, make_chain: MakeChain
) -> None:
    await migrate(postgres_server.url, schema)
    async with Store(postgres_server.url, schema) as store:
        await store.write(make_chain(1))

    await migrate(postgres_server.url, schema)

    async with Store(postgres_server.url, schema) as store:
        assert (await store.counts())["signals"] == 1


async def test_migrated_schema_is_what_the_tables_module_describes(
    postgres_server: PostgresServer, schema: str
) -> None:
    await migrate(postgres_server.url, schema)
    # Inspect through search_path, so the schema-less metadata compares with this schema.
    engine = create_async_engine(
        postgres_server.url, connect_args={"server_settings": {"search_path": schema}}
    )

    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_rewriting_a_batch_adds_no_row(
    postgres_server: PostgresServer, schema: str, make_chain: MakeChain
) -> None:
    await migrate(postgres_server.url, schema)
    async with Store(postgres_server.url, schema) as store:
        events = make_chain(1) + make_chain(2)

        first = await store.write(events)
        again = await store.write(events + make_chain(3))
        racing = await asyncio.gather(*(store.write(make_chain(4)) for _ in range(4)))

        assert (first, again, sorted(racing)) == (8, 4, [0, 0, 0, 4])
        assert (await store.counts())["fills"] == 8
        assert await store.read(Fill) == [e for n in range(1, 5) for e in make_chain(n)[2:]]


async def test_trace_from_any_id_gives_the_whole_chain(
    postgres_server: PostgresServer, schema: str, make_chain: MakeChain
) -> None:
    await migrate(postgres_server.url, schema)
    async with Store(postgres_server.url, schema) as store:
        await store.write(make_chain(1) + make_chain(2))

        traces = [await store.trace(i) for i in ("binance:BTCUSDT:2", "sig-2", "ord-2", "fill-2-1")]

    expected = [
        ("trade", "binance:BTCUSDT:2"), ("signal", "sig-2"), ("order", "ord-2"),
        ("fill", "fill-2-0"), ("fill", "fill-2-1"),
    ]  # fmt: skip
    for steps in traces:
        assert [(s.kind, s.id) for s in steps] == expected
    assert [s.ts for s in traces[0]] == sorted(s.ts for s in traces[0])


async def test_a_missing_database_is_a_store_error_naming_the_fix(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.url.rsplit("/", 1)[0] + "/no_such_db"

    with pytest.raises(StoreError, match=r"no_such_db.*\(create the database first\)"):
        await migrate(url)


async def test_a_store_rides_out_a_server_restart(make_chain: MakeChain) -> None:
    """While the server is down writes fail with StoreError (the db_writer holds and
    retries); once it is back the same Store writes again."""
    async with PostgresServer() as server:
        await migrate(server.url, "cdb")
        async with Store(server.url, "cdb") as store:
            await store.write(make_chain(1))

            await asyncio.to_thread(server.stop)
            with pytest.raises(StoreError, match="write of 1 signals, 1 orders, 2 fills"):
                await store.write(make_chain(2))
            await asyncio.to_thread(server.start)

            assert await store.write(make_chain(2)) == 4
            assert (await store.counts())["fills"] == 4


def orders_in_every_state() -> tuple[list[AnyEvent], list[str], set[str]]:
    """Orders filled, partly filled, cancelled after a part, and never answered: the
    events, the ids of the unfinished ones and their recorded venue fill ids."""
    from cdb.events import Order, OrderUpdate

    events: list[AnyEvent] = []
    for n, name in enumerate(("filled", "partial", "cancelled", "silent")):
        order = Order(id=name, ts=1_000 + n, correlation_id=f"t{n}", causation_id=f"s{n}",
                      source="risk", client_order_id=f"cdb-{name}", symbol="BTCUSDT",
                      side="BUY", order_type="MARKET", qty_e8=2, ref_price_e8=100)
        events.append(order)
        statuses = {"filled": ["PARTIALLY_FILLED", "FILLED"], "partial": ["PARTIALLY_FILLED"],
                    "cancelled": ["PARTIALLY_FILLED"], "silent": []}[name]
        for i, status in enumerate(statuses):
            events.append(Fill(
                id=f"{name}-f{i}", ts=2_000 + n * 10 + i, correlation_id=f"t{n}",
                causation_id=name, source="execution", order_id=name,
                client_order_id=order.client_order_id, venue="paper", symbol="BTCUSDT",
                side="BUY", price_e8=100, qty_e8=1, fee_e8=0, venue_fill_id=f"{name}-v{i}",
                order_status=status, cum_qty_e8=i + 1))
        if name == "cancelled":
            events.append(OrderUpdate(
                id="cancelled-u", ts=3_000, correlation_id="t2", causation_id=name,
                source="execution", order_id=name, client_order_id=order.client_order_id,
                symbol="BTCUSDT", status="CANCELED", reason="by the user", filled_qty_e8=1))
    return events, ["partial", "silent"], {"partial-v0"}


async def test_unfinished_orders_are_found_by_the_database(
    postgres_server: PostgresServer, schema: str
) -> None:
    events, unfinished, fill_ids = orders_in_every_state()
    await migrate(postgres_server.url, schema)
    async with Store(postgres_server.url, schema) as store:
        await store.write(events)
        orders, found = await store.unfinished_orders(
            ["FILLED", "CANCELED", "REJECTED", "EXPIRED"])
    assert [o.id for o in orders] == unfinished
    assert {fill_id for _, fill_id, _ in found} == fill_ids


async def check_orders_in_play_and_stream(store: Store) -> None:
    """Shared by the PostgreSQL and the SQLite test."""
    events, _, _ = orders_in_every_state()
    await store.write(events)
    final = ["FILLED", "CANCELED", "REJECTED", "EXPIRED"]
    orders, updates = await store.orders_in_play(final, newest=1)
    assert [o.id for o in orders] == ["partial", "silent"]  # unfinished; newest is silent
    assert updates == []
    orders, updates = await store.orders_in_play(final, newest=3)
    assert [o.id for o in orders] == ["partial", "cancelled", "silent"]
    assert [u.id for u in updates] == ["cancelled-u"]
    chunks = [[f.id for f in chunk] async for chunk in store.stream(Fill, chunk=2)]
    assert chunks == [["filled-f0", "filled-f1"], ["partial-f0", "cancelled-f0"]]


async def test_orders_in_play_and_streamed_reads(
    postgres_server: PostgresServer, schema: str
) -> None:
    await migrate(postgres_server.url, schema)
    async with Store(postgres_server.url, schema) as store:
        await check_orders_in_play_and_stream(store)
