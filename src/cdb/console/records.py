"""The console's reads of the database of record: recent orders, fills, alerts, ESS
changes, open orders and audit chains, each bounded and each with a timeout, so a
slow or absent database shows as a problem on the page instead of a hung request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cdb.console.views import AlertView, ChainStep, FillRow, OrderRow, PositionView, TripView
from cdb.events import Alert, EssChange, Fill, Order, OrderUpdate, fmt_e8
from cdb.storage.engine import make_engine, parse_url
from cdb.storage.store import Store
from cdb.storage.tables import TABLE_OF

T = TypeVar("T")
FINAL = ("FILLED", "CANCELED", "REJECTED", "EXPIRED")
DB_TIMEOUT_S = 3.0


def when(ts_ns: int) -> str:
    """Event time for people: UTC, to the millisecond."""
    if not ts_ns:
        return ""
    moment = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


class Records:
    """Reads of one database (an async context manager).

    Args:
        url: SQLAlchemy URL (SQLite or PostgreSQL).
        schema: the pipeline's PostgreSQL schema, or None.
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self._engine: AsyncEngine | None = None
        self._store: Store | None = None

    async def __aenter__(self) -> Records:
        self._engine = make_engine(parse_url(self.url), self.schema)
        self._store = Store(self.url, self.schema)
        await self._store.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.__aexit__(None, None, None)
        if self._engine is not None:
            await self._engine.dispose()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("Records used outside its context")
        return self._engine

    async def _bounded(self, work: Awaitable[T]) -> T:
        return await asyncio.wait_for(work, DB_TIMEOUT_S)

    async def _newest(self, event: type, limit: int) -> list[dict[str, object]]:
        table = TABLE_OF[event]
        query = select(table).order_by(table.c.ts.desc(), table.c.id.desc()).limit(limit)

        async def run() -> list[dict[str, object]]:
            async with self.engine.connect() as conn:
                return [dict(row) for row in (await conn.execute(query)).mappings()]

        return await self._bounded(run())

    async def alerts(self, limit: int = 20) -> list[AlertView]:
        rows = await self._newest(Alert, limit)
        return [AlertView(at=when(int(str(r["ts"]))), level=str(r["level"]),
                          code=str(r["code"]), message=str(r["message"]),
                          source=str(r["source"])) for r in rows]

    async def ess_changes(self, limit: int = 50) -> list[TripView]:
        rows = await self._newest(EssChange, limit)
        return [TripView(at=when(int(str(r["ts"]))), state=str(r["state"]),
                         reason=str(r["reason"]), actor=str(r["actor"]),
                         detail=str(r["detail"])) for r in rows]

    async def orders(self, limit: int = 50) -> list[OrderRow]:
        rows = await self._newest(Order, limit)
        status = await self._statuses([str(r["id"]) for r in rows])
        return [_order_row(r, status.get(str(r["id"]), "NEW")) for r in rows]

    async def _statuses(self, ids: list[str]) -> dict[str, str]:
        """Latest known status of each order (updates and fills, by ts)."""
        if not ids:
            return {}
        u, f = TABLE_OF[OrderUpdate], TABLE_OF[Fill]

        async def run() -> dict[str, str]:
            found: list[tuple[int, str, str]] = []
            async with self.engine.connect() as conn:
                for query in (select(u.c.ts, u.c.order_id, u.c.status).where(u.c.order_id.in_(ids)),
                              select(f.c.ts, f.c.order_id, f.c.order_status)
                              .where(f.c.order_id.in_(ids))):
                    found += [(int(a), str(b), str(c)) for a, b, c in await conn.execute(query)]
            return {order_id: status for _, order_id, status in sorted(found)}

        return await self._bounded(run())

    async def fills(self, limit: int = 50) -> list[FillRow]:
        rows = await self._newest(Fill, limit)
        return [FillRow(id=str(r["id"]), order_id=str(r["order_id"]), at=when(int(str(r["ts"]))),
                        symbol=str(r["symbol"]), side=str(r["side"]),
                        qty=fmt_e8(int(str(r["qty_e8"]))), price=fmt_e8(int(str(r["price_e8"]))),
                        fee=fmt_e8(int(str(r["fee_e8"]))), status=str(r["order_status"]))
                for r in rows]

    async def open_orders(self) -> list[OrderRow]:
        if self._store is None:
            return []
        orders, _ = await self._bounded(self._store.unfinished_orders(FINAL))
        return [_order_row(msgspec_row(o), "open") for o in orders[-100:]]

    async def positions(self) -> list[PositionView]:
        """Net quantity per symbol from the recorded fills (embedded: no risk API)."""
        f = TABLE_OF[Fill]

        async def run() -> dict[str, int]:
            net: dict[str, int] = {}
            async with self.engine.connect() as conn:
                for symbol, side, qty in await conn.execute(select(f.c.symbol, f.c.side,
                                                                   f.c.qty_e8)):
                    sign = 1 if side == "BUY" else -1
                    net[str(symbol)] = net.get(str(symbol), 0) + sign * int(qty)
            return net

        net = await self._bounded(run())
        return [PositionView(symbol=s, qty=fmt_e8(q)) for s, q in sorted(net.items()) if q]

    async def chain(self, event_id: str) -> list[ChainStep]:
        """The audit chain of ``event_id`` (as ``cdb audit trace``), with hop latency."""
        if self._store is None:
            return []
        steps = await self._bounded(self._store.trace(event_id))
        out: list[ChainStep] = []
        previous: int | None = None
        for step in steps:
            latency = "" if previous is None else f"{(step.ts - previous) / 1e6:.3f} ms"
            previous = step.ts
            out.append(ChainStep(kind=step.kind, id=step.id, at=when(step.ts), latency_ms=latency,
                                 source=step.source, summary=step.summary))
        return out


def msgspec_row(order: Order) -> dict[str, object]:
    return {"id": order.id, "ts": order.ts, "symbol": order.symbol, "side": order.side,
            "qty_e8": order.qty_e8, "price_e8": order.price_e8 or order.ref_price_e8,
            "reduce_only": order.reduce_only}


def _order_row(r: dict[str, object], status: str) -> OrderRow:
    price = int(str(r.get("price_e8") or 0)) or int(str(r.get("ref_price_e8") or 0))
    return OrderRow(id=str(r["id"]), at=when(int(str(r["ts"]))), symbol=str(r["symbol"]),
                    side=str(r["side"]), qty=fmt_e8(int(str(r["qty_e8"]))),
                    price=fmt_e8(price), status=status, reduce_only=bool(r.get("reduce_only")))
