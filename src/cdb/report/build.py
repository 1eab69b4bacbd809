"""What a run report shows, computed from the database: one ``RunView`` per run.

The event tables give every order, fill, rejection and ESS change of the run (all
kept); the ``runs`` row gives its settings, inputs, summary and the downsampled price
and equity series (trades themselves are not stored).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from cdb.errors import CdbError
from cdb.events import SCALE, EssChange, Fill, Order, RiskDecision, mul_e8
from cdb.report.series import RunSeries
from cdb.storage.runs import RunRecord
from cdb.storage.store import Store

NS_PER_S = 1_000_000_000


class SymbolResult(msgspec.Struct, kw_only=True):
    """Per-symbol results of a run (money in quote currency, floats for display)."""

    symbol: str
    fills: int = 0
    buys: int = 0
    sells: int = 0
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    fees: float = 0.0
    closing_fills: int = 0
    winning_closes: int = 0
    max_exposure: float = 0.0
    """Largest absolute position value during the run, at fill prices."""
    position: float = 0.0

    @property
    def pnl(self) -> float:
        return self.realized_pnl + self.unrealized_pnl - self.fees

    @property
    def win_rate(self) -> float | None:
        return self.winning_closes / self.closing_fills if self.closing_fills else None


class Chart(msgspec.Struct, kw_only=True):
    """One price chart: the price line and its marks, x in seconds."""

    symbol: str
    price: list[list[float]]
    buys: list[list[float]]
    sells: list[list[float]]
    orders: list[list[float]]
    trips: list[list[float]]


class RunView(msgspec.Struct, kw_only=True):
    """Everything a report shows of one run."""

    run_id: str
    kind: str
    started_ns: int
    finished_ns: int
    legs: int
    settings: dict[str, object]
    inputs: list[dict[str, object]]
    summary: dict[str, object]
    equity: list[list[float]]
    """[x seconds], [equity], [drawdown %]."""
    charts: list[Chart]
    symbols: list[SymbolResult]
    rejections: dict[str, int]
    trips: list[dict[str, object]]
    fills: int
    orders: int


def _spread(ts_ns: list[int]) -> list[float]:
    """Seconds, nudged by a microsecond where ts repeat: the chart keeps every point."""
    out: list[float] = []
    last = None
    for ts in ts_ns:
        x = ts / NS_PER_S
        if last is not None and x <= last:
            x = last + 1e-6
        out.append(x)
        last = x
    return out


def _price_at(points: list[tuple[int, int]], ts: int) -> float:
    """The sampled price at or before ``ts`` (the first one before the series starts)."""
    lo, hi = 0, len(points)
    while lo < hi:
        mid = (lo + hi) // 2
        if points[mid][0] <= ts:
            lo = mid + 1
        else:
            hi = mid
    return points[max(lo - 1, 0)][1] / SCALE if points else 0.0


def _results(fills: list[Fill], last_price: dict[str, int]) -> list[SymbolResult]:
    results: dict[str, SymbolResult] = {}
    state: dict[str, tuple[int, int]] = {}  # symbol -> (qty e8, average cost e8)
    for fill in fills:
        r = results.setdefault(fill.symbol, SymbolResult(symbol=fill.symbol))
        r.fills += 1
        r.fees += fill.fee_e8 / SCALE
        qty, cost = state.get(fill.symbol, (0, 0))
        signed = fill.qty_e8 if fill.side == "BUY" else -fill.qty_e8
        if fill.side == "BUY":
            r.buys += 1
        else:
            r.sells += 1
        if qty and (qty > 0) != (signed > 0):
            closed = min(abs(qty), abs(signed))
            gain = mul_e8(fill.price_e8 - cost, closed) * (1 if qty > 0 else -1)
            r.realized_pnl += gain / SCALE
            r.closing_fills += 1
            r.winning_closes += gain > 0
            new = qty + signed
            if new and (new > 0) != (qty > 0):
                cost = fill.price_e8  # flipped: the rest opens at this price
            qty = new
        else:
            total = qty + signed
            cost = (cost * abs(qty) + fill.price_e8 * abs(signed)) // abs(total) if total else 0
            qty = total
        state[fill.symbol] = (qty, cost if qty else 0)
        r.max_exposure = max(r.max_exposure, abs(mul_e8(qty, fill.price_e8)) / SCALE)
    for symbol, (qty, cost) in state.items():
        r = results[symbol]
        r.position = qty / SCALE
        mark = last_price.get(symbol, cost)
        r.unrealized_pnl = mul_e8(mark - cost, qty) / SCALE if qty else 0.0
    return [results[s] for s in sorted(results)]


async def load_run(store: Store, record: RunRecord) -> RunView:
    """The view of ``record``'s run, read through ``store`` (scoped to that run)."""
    series = (msgspec.json.decode(record.series, type=RunSeries) if record.series
              else RunSeries())
    fills = await store.read(Fill)
    orders = await store.read(Order)
    decisions = await store.read(RiskDecision)
    changes = await store.read(EssChange)
    summary = msgspec.json.decode(record.summary) if record.summary else {}
    rejections: dict[str, int] = {}
    for decision in decisions:
        if not decision.approved:
            rejections[decision.reason] = rejections.get(decision.reason, 0) + 1
    trips = [c for c in changes if c.state == "HALTED"]
    equity_x = [ts / NS_PER_S for ts, _ in series.equity]
    equity_y = [v / SCALE for _, v in series.equity]
    drawdown: list[float] = []
    peak = 0.0
    for value in equity_y:
        peak = max(peak, value)
        drawdown.append(round((value - peak) / peak * 100, 4) if peak else 0.0)
    charts = []
    symbols = sorted(set(series.prices) | {f.symbol for f in fills} | {o.symbol for o in orders})
    for symbol in symbols:
        points = series.prices.get(symbol, [])
        buys = [f for f in fills if f.symbol == symbol and f.side == "BUY"]
        sells = [f for f in fills if f.symbol == symbol and f.side == "SELL"]
        mine = [o for o in orders if o.symbol == symbol]
        charts.append(Chart(
            symbol=symbol,
            price=[_spread([ts for ts, _ in points]), [p / SCALE for _, p in points]],
            buys=[_spread([f.ts for f in buys]), [f.price_e8 / SCALE for f in buys]],
            sells=[_spread([f.ts for f in sells]), [f.price_e8 / SCALE for f in sells]],
            orders=[_spread([o.ts for o in mine]),
                    [(o.price_e8 or o.ref_price_e8) / SCALE for o in mine]],
            trips=[_spread([t.ts for t in trips]), [_price_at(points, t.ts) for t in trips]],
        ))
    last_price = {s: p[-1][1] for s, p in series.prices.items() if p}
    return RunView(
        run_id=record.run_id, kind=record.kind, started_ns=record.started_ns,
        finished_ns=record.finished_ns, legs=record.legs,
        settings=msgspec.json.decode(record.settings or "{}"),
        inputs=msgspec.json.decode(record.inputs or "[]"),
        summary=summary,
        equity=[equity_x, equity_y, drawdown],
        charts=charts,
        symbols=_results(fills, last_price),
        rejections=dict(sorted(rejections.items(), key=lambda kv: -kv[1])),
        trips=[{"ts": t.ts, "reason": t.reason, "detail": t.detail, "actor": t.actor}
               for t in trips],
        fills=len(fills),
        orders=len(orders),
    )


async def load_runs(url: str, run_ids: list[str]) -> list[RunView]:
    """The views of ``run_ids`` (ids or unique prefixes) in the database at ``url``.

    Raises:
        CdbError: a run id that names no run (or more than one).
    """
    records = []
    async with Store.open_migrated(url) as store:
        for wanted in run_ids:
            record = await store.run(wanted)
            if record is None:
                raise CdbError(f"no run {wanted!r} in the database (or the prefix is "
                               "ambiguous); `cdb runs` lists them")
            records.append(record)
    views = []
    for record in records:
        async with Store(url, run_id=record.run_id) as scoped:
            views.append(await load_run(scoped, record))
    return views


async def write_report(url: str, run_ids: list[str], out: Path) -> None:
    """Write the HTML report of one run, or two side by side, to ``out``."""
    from cdb.report.html import render

    views = await load_runs(url, run_ids)
    text = render(views)
    await asyncio.to_thread(_write, out, text)


def _write(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
