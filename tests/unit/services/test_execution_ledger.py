"""``GET /venue/ledger`` serves the venue's own record of executions, and a 404 for a
venue that keeps none."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from fastapi import FastAPI
from tests.unit.services.risk_harness import T0, RecordingBus
from tests.unit.services.test_execution_cancel import order, trade

from cdb.clock import SimClock
from cdb.events import Order, Trade
from cdb.runtime.control_http import ledger_router
from cdb.services.base import ServiceContext
from cdb.services.execution import ExecutionService
from cdb.venues.base import Execution, Venue
from cdb.venues.paper import PaperVenue


class Bare:
    """A venue with only the required methods."""

    name = "bare"

    async def submit(self, order: Order) -> list[Execution]:
        return []

    async def cancel(self, order_id: str) -> bool:
        return False

    async def on_trades(self, trades: Sequence[Trade]) -> list[Execution]:
        return []

    def open_orders(self) -> list[Order]:
        return []


async def get_ledger(venue: Venue) -> httpx.Response:
    ctx = ServiceContext(name="execution", instance="ex-1", bus=RecordingBus(),  # type: ignore[arg-type]
                         clock=SimClock(T0))
    app = FastAPI()
    app.include_router(ledger_router(ExecutionService(ctx, venue)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://execution") as client:
        return await client.get("/venue/ledger")


async def test_the_ledger_lists_the_paper_venues_executions() -> None:
    venue = PaperVenue()
    await venue.submit(order("o1", qty=1.0))
    await venue.on_trades([trade(1, 5.0)])
    rows = (await get_ledger(venue)).json()
    assert [(r["order_id"], r["client_order_id"], r["qty_e8"]) for r in rows] == [
        ("o1", "c-o1", 100_000_000)]


async def test_a_venue_without_a_ledger_answers_404() -> None:
    answer = await get_ledger(Bare())
    assert answer.status_code == 404
    assert answer.json() == {"detail": "this venue keeps no local ledger"}
