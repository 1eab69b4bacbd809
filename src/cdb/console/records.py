"""The console's reads of the database of record: recent orders, fills, alerts, ESS
changes, open orders and audit chains, each bounded and each with a timeout, so a
slow or absent database shows as a problem on the page instead of a hung request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cdb.console.views import (
    AlertView,
    ChainStep,
    EquityView,
    FillRow,
    OrderRow,
    PositionView,
    RunRow,
    TripView,
)
from cdb.events import SCALE, Alert, EssChange, Fill, Order, OrderUpdate, fmt_e8
from cdb.report.series import MAX_POINTS, RunSeries, downsample
from cdb.storage.engine import make_engine, parse_url
from cdb.storage.runs import RunRecord
from cdb.storage.store import Store
from cdb.storage.tables import TABLE_OF

T = TypeVar("T")
FINAL = ("FILLED", "CANCELED", "REJECTED", "EXPIRED")
DB_TIMEOUT_S = 3.0
REPORT_TIMEOUT_S = 60.0
"""A run report reads every order and fill of the run: a bigger budget."""


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

    async def equity(self, curve: EquityCurve, batch: int = 50_000) -> EquityCurve:
        """``curve`` advanced by the fills recorded since its cursor (at most ``batch``)."""
        f = TABLE_OF[Fill]
        ts, last = curve.cursor
        query = (select(f.c.ts, f.c.id, f.c.symbol, f.c.side, f.c.qty_e8, f.c.price_e8,
                        f.c.fee_e8)
                 .where((f.c.ts > ts) | ((f.c.ts == ts) & (f.c.id > last)))
                 .order_by(f.c.ts, f.c.id).limit(batch))

        async def run() -> list[tuple[int, str, str, str, int, int, int]]:
            async with self.engine.connect() as conn:
                return [(int(a), str(b), str(c), str(d), int(e), int(g), int(h))
                        for a, b, c, d, e, g, h in await conn.execute(query)]

        for row in await self._bounded(run()):
            curve.add(*row)
        return curve

    async def runs(self) -> list[RunRecord]:
        """The runs recorded in the database, oldest first (``Store.runs``)."""
        if self._store is None:
            return []
        return await self._bounded(self._store.runs())

    async def run_equity(self, run_id: str) -> EquityView | None:
        """The equity series a run recorded (embedded runs do), or None."""
        if self._store is None:
            return None
        record = await self._bounded(self._store.run(run_id))
        if record is None or not record.series:
            return None
        series = msgspec.json.decode(record.series, type=RunSeries)
        return equity_view(series.equity) if series.equity else None

    async def run_rows(self) -> list[RunRow]:
        """The runs, newest first, as the runs page lists them."""
        return [run_row(r) for r in reversed(await self.runs())]

    async def report(self, run_id: str) -> str | None:
        """The HTML report of ``run_id`` (what ``cdb report`` writes), or None."""
        from cdb.report.build import load_run
        from cdb.report.html import render

        if self._store is None:
            return None
        record = await self._bounded(self._store.run(run_id))
        if record is None or record.run_id != run_id:
            return None
        async with Store(self.url, self.schema, run_id=record.run_id) as scoped:
            view = await asyncio.wait_for(load_run(scoped, record), REPORT_TIMEOUT_S)
        return render([view])

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


class EquityCurve:
    """Equity over time from the recorded fills, computed as they come (a cursor).

    Cash moves by each fill's notional and fee; positions are marked at the last fill
    price of their symbol, so the curve is what the fills say, whatever the process
    that made them (risk restarts do not break it). Points are kept small with the
    report's ``downsample``.

    Args:
        initial_cash_e8: the portfolio's cash before the first fill.
    """

    def __init__(self, initial_cash_e8: int) -> None:
        self.cash_e8 = initial_cash_e8
        self.positions: dict[str, int] = {}
        self.marks: dict[str, int] = {}
        self.points: list[tuple[int, int]] = []
        self.cursor: tuple[int, str] = (0, "")
        """(ts, id) of the last fill counted."""

    def add(self, ts: int, fill_id: str, symbol: str, side: str, qty_e8: int, price_e8: int,
            fee_e8: int) -> None:
        sign = 1 if side == "BUY" else -1
        self.cash_e8 -= sign * qty_e8 * price_e8 // SCALE + fee_e8
        self.positions[symbol] = self.positions.get(symbol, 0) + sign * qty_e8
        self.marks[symbol] = price_e8
        equity = self.cash_e8 + sum(q * self.marks[s] // SCALE
                                    for s, q in self.positions.items())
        self.points.append((ts, equity))
        self.cursor = (ts, fill_id)
        if len(self.points) > 4 * MAX_POINTS:
            self.points = downsample(self.points, MAX_POINTS)

    def series(self) -> EquityView:
        """Seconds, equity and drawdown from the running peak (%), for the chart."""
        return equity_view([(ts, v) for ts, v in downsample(self.points, MAX_POINTS)])


def run_row(run: RunRecord) -> RunRow:
    """What the runs page shows of a run (the summary's counts, as ``cdb runs``)."""
    try:
        summary = msgspec.json.decode(run.summary) if run.summary else {}
        inputs = msgspec.json.decode(run.inputs) if run.inputs else []
    except msgspec.DecodeError:
        summary, inputs = {}, []
    summary = summary if isinstance(summary, dict) else {}
    names = [str(i.get("path") or i.get("source") or "").rsplit("/", 1)[-1]
             for i in inputs if isinstance(i, dict)] if isinstance(inputs, list) else []
    ess = summary.get("ess")
    state = ess.get("state", "") if isinstance(ess, dict) else ""
    return RunRow(run_id=run.run_id, kind=run.kind, started=when(run.started_ns),
                  finished=when(run.finished_ns) if run.finished_ns else "running",
                  legs=run.legs, trades=str(summary.get("trades", "")),
                  orders=str(summary.get("orders", "")), fills=str(summary.get("fills", "")),
                  pnl=str(summary.get("pnl", "")), ess=str(state), inputs=", ".join(names))


def equity_view(points: list[tuple[int, int]]) -> EquityView:
    xs: list[float] = []
    ys: list[float] = []
    dds: list[float] = []
    peak = 0.0
    for ts, value_e8 in points:
        value = value_e8 / SCALE
        peak = max(peak, value)
        xs.append(ts / 1e9)
        ys.append(value)
        dds.append(round((value - peak) / peak * 100, 4) if peak > 0 else 0.0)
    return EquityView(x=xs, equity=ys, drawdown_pct=dds)


def msgspec_row(order: Order) -> dict[str, object]:
    return {"id": order.id, "ts": order.ts, "symbol": order.symbol, "side": order.side,
            "qty_e8": order.qty_e8, "price_e8": order.price_e8 or order.ref_price_e8,
            "reduce_only": order.reduce_only}


def _order_row(r: dict[str, object], status: str) -> OrderRow:
    price = int(str(r.get("price_e8") or 0)) or int(str(r.get("ref_price_e8") or 0))
    return OrderRow(id=str(r["id"]), at=when(int(str(r["ts"]))), symbol=str(r["symbol"]),
                    side=str(r["side"]), qty=fmt_e8(int(str(r["qty_e8"]))),
                    price=fmt_e8(price), status=status, reduce_only=bool(r.get("reduce_only")))
