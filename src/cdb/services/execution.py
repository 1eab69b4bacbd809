"""execution: places approved orders on a venue and publishes their fills.

Idempotent on the client order id (a redelivered order is not placed again); fills
are published on ``stream.fills`` with envelopes that chain them to their order.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
from fastapi import APIRouter, Response

from cdb.bus.keys import FILLS, MARKET_DATA, ORDERS
from cdb.events import AnyEvent, Fill, Order, Trade
from cdb.observability import metrics
from cdb.runtime.service import Service, ServiceContext
from cdb.venues.base import Execution, Venue


class ExecutionService(Service):
    """Drives a ``Venue``: orders in, fills out."""

    name: ClassVar[str] = "execution"
    inputs: ClassVar[tuple[str, ...]] = (ORDERS, MARKET_DATA)

    def __init__(self, ctx: ServiceContext, venue: Venue) -> None:
        super().__init__(ctx)
        self.venue = venue
        self.fills = 0
        self.orders = 0
        self._fills_metric = metrics.fills_total.labels(ctx.name, ctx.instance)

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        if topic == MARKET_DATA:
            trades: list[Trade] = events  # type: ignore[assignment]
            executions = await self.venue.on_trades(trades)
        else:
            executions = []
            for order in events:
                if isinstance(order, Order):
                    self.orders += 1
                    executions.extend(await self.venue.submit(order))
        if executions:
            await self._publish(executions)

    async def _publish(self, executions: list[Execution]) -> None:
        source = self.ctx.instance
        venue = self.venue.name
        fills: list[AnyEvent] = [
            Fill(
                id=f"{x.order.id}-f{x.venue_fill_id.rsplit('-', 1)[-1]}", ts=x.ts,
                correlation_id=x.order.correlation_id, causation_id=x.order.id, source=source,
                order_id=x.order.id, client_order_id=x.order.client_order_id, venue=venue,
                symbol=x.order.symbol, side=x.order.side, price_e8=x.price_e8, qty_e8=x.qty_e8,
                fee_e8=x.fee_e8, venue_fill_id=x.venue_fill_id, order_status=x.status,
                cum_qty_e8=x.cum_qty_e8,
            )
            for x in executions
        ]
        await self.ctx.publish(FILLS, fills)
        self.fills += len(fills)
        self._fills_metric.inc(len(fills))

    def routes(self) -> list[APIRouter]:
        router = APIRouter()

        @router.get("/venue/ledger")
        async def ledger() -> Response:
            """Every execution the venue made (its own record, to audit the database)."""
            rows = getattr(self.venue, "ledger", None)
            if rows is None:
                return Response(b'{"detail":"this venue keeps no local ledger"}', 404,
                                media_type="application/json")
            body = [
                {"order_id": x.order.id, "client_order_id": x.order.client_order_id,
                 "venue_fill_id": x.venue_fill_id, "price_e8": x.price_e8, "qty_e8": x.qty_e8,
                 "fee_e8": x.fee_e8, "ts": x.ts}
                for x in rows
            ]
            return Response(msgspec.json.encode(body), media_type="application/json")

        return [router]

    def status(self) -> dict[str, object]:
        return {"venue": self.venue.name, "orders": self.orders, "fills": self.fills}
