"""`cdb up` with paper execution killed (SIGKILL) while limit orders rest on its book:
the restarted process takes them back from the database, each fills once and none is
placed twice, and the venue's ledger over both lives equals the database's fills."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from cdb.bus.keys import ALERTS_STREAM, FILLS, MARKET_DATA, ORDERS, Namespace
from cdb.config import Settings
from cdb.events import SCALE, Alert, AnyEvent, Fill, Order, Side, Trade, decode, encode
from cdb.testing.cluster import LocalPipeline
from cdb.testing.waiting import eventually
from tests.e2e.test_distributed import db_rows, stream_ids

pytestmark = pytest.mark.timeout(300)

SYMBOL = "BTCUSDT"
LOT = SCALE // 1000
"""0.001 BTC."""
ENV = {
    # A short market at full speed that ends (and says so, so risk does not take the
    # silence after it for a stale feed): then the test is the only source of trades and
    # decides when the resting orders cross.
    "WS_SPEED": "max", "WS_DURATION_S": "600", "WS_SEED": "11",
    # The default, not LocalPipeline's 2 s: the restarted consumer keeps its name and
    # reads what it left pending first, so nothing waits for a claim.
    "CDB_CLAIM_IDLE_S": str(Settings.model_fields["cdb_claim_idle_s"].default),
}


def publish(pipe: LocalPipeline, stream: str, events: Sequence[AnyEvent]) -> None:
    """Put ``events`` on ``stream`` as a service's publish does."""
    with pipe.redis_client() as client:
        for event in events:
            client.xadd(Namespace(pipe.namespace).key(stream), {"e": encode(event)})


def last_trade(pipe: LocalPipeline, symbol: str) -> Trade:
    with pipe.redis_client() as client:
        entries = client.xrevrange(Namespace(pipe.namespace).key(MARKET_DATA), count=5_000)
    trades = (decode(fields[b"e"]) for _, fields in entries)
    return next(t for t in trades if isinstance(t, Trade) and t.symbol == symbol)


def limit(n: int, side: Side, price_e8: int, qty_e8: int, last: Trade) -> Order:
    """A limit order decided on the market's last trade, as risk would send it."""
    oid = f"limit-{n}"
    return Order(
        id=oid, ts=last.ts + 1_000_000, correlation_id=last.id, causation_id=last.id,
        source="e2e", client_order_id=f"c-{oid}", symbol=last.symbol, side=side,
        order_type="LIMIT", qty_e8=qty_e8, price_e8=price_e8, ref_price_e8=last.price_e8,
        ref_trade_id=last.trade_id,
    )


def trade(last: Trade, n: int, price_e8: int, qty_e8: int) -> Trade:
    """The ``n``-th print after ``last`` on its symbol."""
    tid = last.trade_id + n
    tag = f"e2e:{last.symbol}:{tid}"
    return Trade(id=tag, ts=last.ts + 1_000_000 * (n + 1), correlation_id=tag,
                 causation_id=tag, source="e2e-feed", venue=last.venue, symbol=last.symbol,
                 trade_id=tid, price_e8=price_e8, qty_e8=qty_e8)


def fills_of(pipe: LocalPipeline, order_ids: set[str]) -> dict[str, list[dict[str, object]]]:
    by_order: dict[str, list[dict[str, object]]] = {o: [] for o in order_ids}
    for row in db_rows(pipe, "fills"):
        if row["order_id"] in by_order:
            by_order[str(row["order_id"])].append(row)
    return by_order


def replaced(pipe: LocalPipeline, name: str, old_pid: int) -> bool:
    """Whether a new process of ``name`` runs and is ready (it reconciled at start)."""
    try:
        ready = pipe.http.get(pipe.url(name, "/health/ready")).status_code == 200
        return ready and int(pipe.details(name)["pid"]) != old_pid
    except httpx.HTTPError:
        return False


def ledger_key(row: dict[str, object]) -> tuple[object, ...]:
    return (row["venue_fill_id"], row["price_e8"], row["qty_e8"], row["fee_e8"])


def test_resting_limit_orders_fill_once_after_execution_is_killed(tmp_path: Path) -> None:
    with LocalPipeline(tmp_path, env=ENV) as pipe:
        pipe.start()
        pipe.wait_done()
        last = last_trade(pipe, SYMBOL)
        px = last.price_e8
        orders = [
            limit(1, "BUY", px * 99 // 100, 3 * LOT, last),  # a third fills before the kill
            limit(2, "BUY", px * 98 // 100, 2 * LOT, last),
            limit(3, "SELL", px * 101 // 100, 2 * LOT, last),
        ]
        ids = {o.id for o in orders}
        publish(pipe, ORDERS, orders)
        publish(pipe, MARKET_DATA, [trade(last, 1, orders[0].price_e8, LOT)])

        def recorded() -> bool:
            if pipe.backlog():
                return False
            stored = {str(r["id"]) for r in db_rows(pipe, "orders")}
            by_order = fills_of(pipe, ids)
            return ids <= stored and [len(by_order[o.id]) for o in orders] == [1, 0, 0]

        eventually(recorded, 60, "the orders and the partial fill in the database")
        first_life = pipe.get("execution", "/venue/ledger")

        pid = pipe.kill("execution")
        eventually(lambda: replaced(pipe, "execution", pid), 60, "execution restarted")
        # Delivered again (a publish retried after it had in fact succeeded): known
        # orders, not new ones.
        publish(pipe, ORDERS, orders)
        publish(pipe, MARKET_DATA, [trade(last, 2, orders[1].price_e8, 1000 * LOT),
                                    trade(last, 3, orders[2].price_e8, 1000 * LOT)])
        # This little feed ends as ws's does.
        end = trade(last, 4, px, LOT)
        publish(pipe, ALERTS_STREAM, [Alert(
            id="e2e-end", ts=end.ts, correlation_id="", causation_id="", source="e2e-feed",
            level="info", code="market_data_end", message="the test's trades ended")])

        def settled() -> bool:
            return pipe.backlog() == 0 and all(
                rows and rows[-1]["order_status"] == "FILLED"
                for rows in fills_of(pipe, ids).values())

        eventually(settled, 60, "the resting orders filled")

        by_order = fills_of(pipe, ids)
        for order in orders:
            rows = by_order[order.id]
            venue_ids = [r["venue_fill_id"] for r in rows]
            n = len(rows)
            # Once: the fills continue the recorded ones and sum to the order.
            assert venue_ids == [f"{order.client_order_id}-{i}" for i in range(1, n + 1)], rows
            assert n == (2 if order.id == "limit-1" else 1), rows
            assert sum(int(str(r["qty_e8"])) for r in rows) == order.qty_e8, rows
            assert all(r["price_e8"] == order.price_e8 for r in rows), rows
            assert [r["order_status"] for r in rows][-1] == "FILLED"
        stored_orders = [str(r["id"]) for r in db_rows(pipe, "orders")]
        assert len(stored_orders) == len(set(stored_orders))
        assert set(stream_ids(pipe, ORDERS, Order)) == set(stored_orders)
        fills = db_rows(pipe, "fills")
        assert len({f["id"] for f in fills}) == len({f["venue_fill_id"] for f in fills}) \
            == len(fills)
        assert set(stream_ids(pipe, FILLS, Fill)) == {str(f["id"]) for f in fills}
        # The venue's own record over both lives is the database's, fill for fill.
        second_life = pipe.get("execution", "/venue/ledger")
        assert sorted(map(ledger_key, first_life + second_life)) == sorted(map(ledger_key, fills))
        assert {r["venue_fill_id"] for r in second_life} >= {"c-limit-1-2", "c-limit-2-1",
                                                             "c-limit-3-1"}
