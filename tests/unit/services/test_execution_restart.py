"""Execution on the paper venue restarted after a crash: the orders it had resting come
back from the database with what they already filled, so they fill the rest once."""

from __future__ import annotations

from pathlib import Path

from tests.unit.services.risk_harness import RecordingBus
from tests.unit.services.test_execution_cancel import T0, order, trade

from cdb.bus.keys import FILLS, MARKET_DATA, ORDERS
from cdb.clock import SimClock
from cdb.events import SCALE, Fill
from cdb.services.base import ServiceContext
from cdb.services.execution import ExecutionService, store_recall
from cdb.storage import Store, migrate
from cdb.venues.paper import PaperVenue


def execution(store: Store) -> tuple[ExecutionService, RecordingBus]:
    bus = RecordingBus()
    ctx = ServiceContext(name="execution", instance="ex-1", bus=bus,  # type: ignore[arg-type]
                         clock=SimClock(T0))
    return ExecutionService(ctx, PaperVenue(), recall=store_recall(store)), bus


async def test_resting_orders_survive_a_crash_of_execution(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cdb.db'}"
    await migrate(url)
    async with Store(url) as store:
        first, bus = execution(store)
        await first.on_start()
        placed = [order("o1"), order("o2", qty=1.0)]
        await first.handle(ORDERS, placed)
        await first.handle(MARKET_DATA, [trade(1, 4.0)])  # o1: 4 of 10; o2 filled
        await store.write([*placed, *bus.of(FILLS)])  # what db_writer stored
        # SIGKILL: the paper book was in memory only.

        second, bus2 = execution(store)
        await second.on_start()
        report = second.reconciled
        assert [o.client_order_id for o in report.adopted] == ["c-o1"]  # type: ignore[attr-defined]
        await second.handle(ORDERS, placed)  # redelivered: not placed again
        assert bus2.of(FILLS) == []
        await second.handle(MARKET_DATA, [trade(2, 100.0)])
        rest = [e for e in bus2.of(FILLS) if isinstance(e, Fill)]
        assert [(f.order_id, f.qty_e8, f.cum_qty_e8, f.order_status, f.venue_fill_id)
                for f in rest] == [("o1", 6 * SCALE, 10 * SCALE, "FILLED", "c-o1-2")]
