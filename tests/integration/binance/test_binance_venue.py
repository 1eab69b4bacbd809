"""The Binance venue against FakeBinance: every exchange fault ends in the documented
behaviour, and the venue's ledger always equals what the venue client reported: no
order placed twice, none lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest
from tests.integration.binance.conftest import Alerts, Eventually, order

from cdb.events import SCALE, mul_e8, parse_e8
from cdb.testing.fake_binance import FakeBinance, Fault
from cdb.venues.base import Execution
from cdb.venues.binance import (
    BinanceVenue,
    OrderUnknownError,
    VenueAuthError,
    VenueBannedError,
    VenueRateLimitedError,
    VenueRejectedError,
)

pytestmark = pytest.mark.integration
MakeVenue = Callable[..., Awaitable[BinanceVenue]]
POST_ORDER = "POST /api/v3/order"


def ledger_of(fake: FakeBinance, cid: str) -> list[tuple[str, int, int, int]]:
    """The venue's fills of one order: (fill id, price, qty, fee in quote)."""
    return [
        (f"{f.symbol}-{f.trade_id}", f.price_e8, f.qty_e8,
         f.commission_e8 if f.commission_asset == "USDT" else mul_e8(f.commission_e8, f.price_e8))
        for f in fake.fills if f.client_order_id == cid
    ]


def reported(executions: list[Execution]) -> list[tuple[str, int, int, int]]:
    return [(x.venue_fill_id, x.price_e8, x.qty_e8, x.fee_e8) for x in executions]


def assert_once(fake: FakeBinance, cid: str, executions: list[Execution]) -> None:
    """Placed exactly once, and every fill on the venue reported exactly once."""
    assert len(fake.placed(cid)) == 1
    assert reported(executions) == ledger_of(fake, cid)
    assert len({x.venue_fill_id for x in executions}) == len(executions)


async def test_market_order_fills_exactly(fake: FakeBinance, make_venue: MakeVenue) -> None:
    venue = await make_venue()
    (x,) = await venue.submit(order(1, "0.01"))
    assert (x.price_e8, x.qty_e8, x.status, x.cum_qty_e8) == (42_000 * SCALE, 10**6, "FILLED",
                                                               10**6)
    # 0.1 % of 0.01 BTC charged in BTC, worth 0.42 USDT at the fill price.
    assert x.fee_e8 == parse_e8("0.42")
    assert_once(fake, "cdb-test-1", [x])
    assert fake.balance("BTC")[0] == parse_e8("1000.00999")


async def test_a_resent_order_is_not_placed_again(fake: FakeBinance, make_venue: MakeVenue) -> None:
    venue = await make_venue()
    first = await venue.submit(order(1))
    assert await venue.submit(order(1)) == []
    assert fake.order_arrivals == ["cdb-test-1"]
    assert_once(fake, "cdb-test-1", first)


async def test_limit_order_rests_then_fills_in_parts_by_polling(
    fake: FakeBinance, make_venue: MakeVenue,
) -> None:
    venue = await make_venue()
    assert await venue.submit(order(1, "0.01", kind="LIMIT", price="41000")) == []
    assert [o.id for o in venue.open_orders()] == ["o1"]
    await fake.publish([fake.trade("BTCUSDT", "41500", "1")])  # above the limit: no fill
    assert await venue.poll() == []
    await fake.publish([fake.trade("BTCUSDT", "40900", "0.004")])
    (part,) = await venue.on_trades([])
    assert (part.qty_e8, part.price_e8, part.status) == (400_000, 41_000 * SCALE,
                                                         "PARTIALLY_FILLED")
    await fake.publish([fake.trade("BTCUSDT", "40800", "1")])
    (rest,) = await venue.poll()
    assert (rest.qty_e8, rest.status, rest.cum_qty_e8) == (600_000, "FILLED", 10**6)
    assert venue.open_orders() == []
    assert_once(fake, "cdb-test-1", [part, rest])


async def test_partial_fill_expires_the_rest_and_reports_it(
    fake: FakeBinance, make_venue: MakeVenue,
) -> None:
    venue = await make_venue()
    fake.inject(Fault(kind="partial_fill", endpoint=POST_ORDER, fill_ratio=0.5, parts=3))
    executions = await venue.submit(order(1, "0.03"))
    assert [x.qty_e8 for x in executions] == [500_000, 500_000, 500_000]
    assert [x.status for x in executions] == ["PARTIALLY_FILLED", "PARTIALLY_FILLED", "EXPIRED"]
    (update,) = venue.take_updates()
    assert (update.status, update.filled_qty_e8, update.order.id) == ("EXPIRED", 1_500_000, "o1")
    assert_once(fake, "cdb-test-1", executions)


async def test_cancel_open_order(fake: FakeBinance, make_venue: MakeVenue) -> None:
    venue = await make_venue()
    await venue.submit(order(1, "0.01", kind="LIMIT", price="41000"))
    assert await venue.cancel("o1") is True
    assert await venue.cancel("o1") is False
    assert await venue.cancel("never-seen") is False
    assert venue.open_orders() == []
    assert fake.placed("cdb-test-1")[0].status == "CANCELED"
    assert fake.balance("USDT") == (parse_e8("1000000"), 0)  # the locked funds came back
    assert venue.take_updates() == []  # the caller reports the cancel it asked for


@pytest.mark.parametrize("kind", ["rate_limit", "order_rate_limit"])
async def test_rate_limits_back_off_for_retry_after_then_place_once(
    fake: FakeBinance, make_venue: MakeVenue, kind: str,
) -> None:
    venue = await make_venue()
    fake.inject(Fault(kind=kind, endpoint=POST_ORDER, times=2, retry_after_s=0.3))  # type: ignore[arg-type]
    started = time.monotonic()
    executions = await venue.submit(order(1))
    assert time.monotonic() - started >= 0.6
    assert fake.order_arrivals == ["cdb-test-1"] * 3
    assert_once(fake, "cdb-test-1", executions)


async def test_plain_429_without_a_code_is_a_rate_limit_too(
    fake: FakeBinance, make_venue: MakeVenue,
) -> None:
    venue = await make_venue()
    fake.inject(Fault(kind="reject", endpoint=POST_ORDER, status=429, code=-1003,
                      msg="Too many requests."))
    assert_once(fake, "cdb-test-1", await venue.submit(order(1)))


async def test_endless_rate_limit_gives_up_places_nothing_and_alerts(
    fake: FakeBinance, make_venue: MakeVenue, alerts: Alerts,
) -> None:
    venue = await make_venue(max_rate_limit_retries=2)
    fake.inject(Fault(kind="rate_limit", endpoint=POST_ORDER, times=None, retry_after_s=0.05))
    with pytest.raises(VenueRateLimitedError) as caught:
        await venue.submit(order(1))
    assert caught.value.code == -1003
    assert fake.placed("cdb-test-1") == []
    assert "venue_rate_limited" in alerts.codes()
    fake.clear_faults()
    # Never placed, so a redelivery of the order sends it (once).
    assert_once(fake, "cdb-test-1", await venue.submit(order(1)))


async def test_a_ban_stops_every_request_until_it_ends(
    fake: FakeBinance, make_venue: MakeVenue, alerts: Alerts,
) -> None:
    venue = await make_venue()
    fake.inject(Fault(kind="ban", retry_after_s=1.0))
    with pytest.raises(VenueBannedError):
        await venue.submit(order(1))
    assert alerts[-1][:2] == ("critical", "venue_banned")
    requests = fake.stats.requests
    with pytest.raises(VenueBannedError, match="no request is sent"):
        await venue.submit(order(2))
    assert fake.stats.requests == requests
    assert venue.open_orders() == []
    await asyncio.sleep(1.05)
    assert_once(fake, "cdb-test-1", await venue.submit(order(1)))


@pytest.mark.parametrize(
    ("fault", "arrivals"),
    [
        # Placed, then the answer is lost or an error: found by its client id, adopted.
        (Fault(kind="timeout", endpoint=POST_ORDER, apply="before", delay_s=3.0), 1),
        (Fault(kind="server_error", endpoint=POST_ORDER, apply="before"), 1),
        (Fault(kind="server_error", endpoint=POST_ORDER, apply="before", status=504), 1),
        (Fault(kind="unknown_status", endpoint=POST_ORDER, apply="before"), 1),
        # Never reached the matching engine: proven absent after the window, sent once more.
        (Fault(kind="timeout", endpoint=POST_ORDER, delay_s=3.0), 2),
        (Fault(kind="server_error", endpoint=POST_ORDER), 2),
        (Fault(kind="unknown_status", endpoint=POST_ORDER), 2),
        # Reaches the matching engine after the client gave up, within the window.
        (Fault(kind="timeout", endpoint=POST_ORDER, apply="after", delay_s=0.8), 1),
    ],
    ids=["lost-answer", "5xx-placed", "504-placed", "1007-placed", "dropped", "5xx-absent",
         "1007-absent", "late"],
)
async def test_an_order_of_unknown_outcome_is_never_sent_blindly(
    fake: FakeBinance, make_venue: MakeVenue, fault: Fault, arrivals: int,
) -> None:
    venue = await make_venue(resolve_window_s=1.5)
    fake.inject(fault)
    executions = await venue.submit(order(1))
    assert fake.order_arrivals == ["cdb-test-1"] * arrivals
    assert_once(fake, "cdb-test-1", executions)


async def test_5xx_and_timeouts_on_queries_are_retried(
    fake: FakeBinance, make_venue: MakeVenue,
) -> None:
    venue = await make_venue()
    await venue.submit(order(1, kind="LIMIT", price="41000"))
    await fake.publish([fake.trade("BTCUSDT", "40000", "1")])
    fake.inject(Fault(kind="server_error", endpoint="GET /api/v3/order", times=2))
    fake.inject(Fault(kind="timeout", endpoint="GET /api/v3/myTrades", delay_s=2.0))
    (fill,) = await venue.poll()
    assert fill.status == "FILLED"
    assert_once(fake, "cdb-test-1", [fill])


async def test_a_query_that_keeps_failing_leaves_the_order_unknown_never_resent(
    fake: FakeBinance, make_venue: MakeVenue, alerts: Alerts,
) -> None:
    venue = await make_venue(resolve_give_up_s=0.5, max_retries=1)
    fake.inject(Fault(kind="timeout", endpoint=POST_ORDER, apply="before", delay_s=3.0))
    fake.inject(Fault(kind="server_error", endpoint="GET /api/v3/order", times=None))
    with pytest.raises(OrderUnknownError):
        await venue.submit(order(1))
    assert [o.id for o in venue.open_orders()] == ["o1"]
    assert "venue_order_unknown" in alerts.codes()
    fake.clear_faults()
    # A later poll finds it and reports its fill; it was never sent again.
    executions = await venue.poll()
    assert fake.order_arrivals == ["cdb-test-1"]
    assert_once(fake, "cdb-test-1", executions)


async def test_an_unknown_order_that_never_arrived_is_closed_not_sent_late(
    fake: FakeBinance, make_venue: MakeVenue,
) -> None:
    venue = await make_venue(resolve_give_up_s=0.3, max_retries=0)
    fake.inject(Fault(kind="timeout", endpoint=POST_ORDER, delay_s=3.0))  # dropped
    fake.inject(Fault(kind="server_error", endpoint="GET /api/v3/order", times=None))
    with pytest.raises(OrderUnknownError):
        await venue.submit(order(1))
    fake.clear_faults()
    assert await venue.cancel("o1") is False  # nothing on the venue to cancel
    await asyncio.sleep(0.6)  # the resolve window since the send has passed
    assert await venue.poll() == []
    (update,) = venue.take_updates()
    assert (update.status, update.reason) == ("EXPIRED", "never reached the venue")
    assert venue.open_orders() == []
    assert fake.order_arrivals == ["cdb-test-1"]
    assert fake.placed("cdb-test-1") == []


async def test_clock_drift_is_resynchronised_once(fake: FakeBinance, make_venue: MakeVenue) -> None:
    venue = await make_venue()
    fake.skew_ms = 20_000  # the server moved ahead: our timestamps are now too old
    assert_once(fake, "cdb-test-1", await venue.submit(order(1)))


async def test_refusals_raise_and_are_reported(fake: FakeBinance, make_venue: MakeVenue) -> None:
    venue = await make_venue()
    with pytest.raises(VenueRejectedError, match="insufficient balance") as caught:
        await venue.submit(order(1, "100"))  # 4.2 M USDT, the account has 1 M
    assert caught.value.code == -2010
    with pytest.raises(VenueRejectedError, match="minimum") as early:
        await venue.submit(order(2, "0.000001"))  # below one lot: refused before sending
    assert early.value.code == 0
    assert [(u.order.id, u.status) for u in venue.take_updates()] == [
        ("o1", "REJECTED"), ("o2", "REJECTED")]
    assert fake.order_arrivals == ["cdb-test-1"]
    assert fake.fills == []


async def test_wrong_credentials_are_an_auth_error(fake: FakeBinance) -> None:
    from cdb.venues.binance import BinanceVenueConfig

    async with BinanceVenue(BinanceVenueConfig(rest_url=fake.url), api_key=fake.api_key,
                            api_secret="not-the-secret") as venue:
        with pytest.raises(VenueAuthError, match="BINANCE_API_KEY"):
            await venue.submit(order(1))
    assert fake.placed("cdb-test-1") == []


async def test_crash_between_send_and_ack_is_resolved_by_reconciliation(
    fake: FakeBinance, make_venue: MakeVenue, eventually: Eventually, alerts: Alerts,
) -> None:
    crashed = await make_venue()
    fake.inject(Fault(kind="timeout", endpoint=POST_ORDER, apply="before", delay_s=3.0))
    sending = asyncio.create_task(crashed.submit(order(1)))
    await eventually(lambda: fake.placed("cdb-test-1"))
    sending.cancel()  # the process dies with the order on the venue, unacknowledged
    with contextlib.suppress(asyncio.CancelledError):
        await sending
    await crashed.aclose()
    # Elsewhere on the venue: an order cdb does not know of.
    fake.exchange.new_order({"symbol": "ETHUSDT", "side": "SELL", "type": "LIMIT",
                             "timeInForce": "GTC", "quantity": "0.1", "price": "9000",
                             "newClientOrderId": "manual-1"}, None)

    restarted = await make_venue()
    sent, never_sent = order(1), order(2, kind="LIMIT", price="41000")
    report = await restarted.reconcile([sent, never_sent])
    assert [o.client_order_id for o in report.adopted] == ["cdb-test-1"]
    assert report.not_on_venue == ["cdb-test-2"]
    assert [o.client_order_id for o in report.unknown_open] == ["manual-1"]
    assert "venue_unknown_open_orders" in alerts.codes()
    assert_once(fake, "cdb-test-1", report.missing_fills)
    # The order is redelivered after the restart: adopted, not placed again.
    assert await restarted.submit(sent) == []
    # The one that never reached the venue is safe to send, once.
    assert await restarted.submit(never_sent) == []
    assert fake.order_arrivals == ["cdb-test-1", "cdb-test-2"]
    assert not report.clean


async def test_reconcile_reports_only_fills_cdb_has_not_recorded(
    fake: FakeBinance, make_venue: MakeVenue,
) -> None:
    first = await make_venue()
    fake.inject(Fault(kind="partial_fill", endpoint=POST_ORDER, parts=2))
    executions = await first.submit(order(1, "0.02"))
    await first.aclose()
    restarted = await make_venue()
    report = await restarted.reconcile([order(1, "0.02")],
                                       known_fill_ids=[executions[0].venue_fill_id])
    assert reported(report.missing_fills) == reported(executions[1:])
    assert report.missing_fills[0].cum_qty_e8 == 2 * 10**6


async def test_reconcile_reports_recent_executions_cdb_has_no_record_of(
    fake: FakeBinance, make_venue: MakeVenue, alerts: Alerts,
) -> None:
    """Executions on the account since the scan start: cdb's own recorded fills match,
    a trade made outside cdb (and one of an order cdb took for finished) are reported."""
    first = await make_venue()
    recorded = [e.venue_fill_id for e in await first.submit(order(1))]
    lost = [e.venue_fill_id for e in await first.submit(order(2))]  # its fill never stored
    await first.aclose()
    fake.exchange.new_order({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET",
                             "quantity": "0.01", "newClientOrderId": "manual-1"}, None)
    manual = [f"BTCUSDT-{f.trade_id}" for f in fake.fills if f.client_order_id == "manual-1"]
    assert recorded
    assert lost
    assert manual

    restarted = await make_venue()
    report = await restarted.reconcile([], scan_since_ms=0, scan_symbols={"BTCUSDT"},
                                       recorded_fill_ids=recorded)
    unknown = [text.split(" ")[0] for text in report.unknown_fills]
    assert sorted(unknown) == sorted(lost + manual)
    assert "venue_unknown_fills" in alerts.codes()
    assert not report.clean
    # Everything recorded: nothing to report.
    clean = await restarted.reconcile([], scan_since_ms=0, scan_symbols={"BTCUSDT"},
                                      recorded_fill_ids=recorded + lost + manual)
    assert clean.unknown_fills == []


async def test_a_redelivered_order_after_restart_is_looked_up_first(
    fake: FakeBinance, make_venue: MakeVenue,
) -> None:
    first = await make_venue()
    executions = await first.submit(order(1, ts=0))
    await first.aclose()
    restarted = await make_venue()
    # Created before this venue started: a predecessor may have sent it.
    adopted = await restarted.submit(order(1, ts=0))
    assert fake.order_arrivals == ["cdb-test-1"]
    assert reported(adopted) == reported(executions)


async def test_the_limiter_keeps_a_burst_under_the_venue_limit(
    make_venue: MakeVenue, fake: FakeBinance,
) -> None:
    fake.weight_limit, fake.weight_window_s, fake.ban_after = 200, 0.5, 1
    venue = await make_venue(weight_limit=200, weight_window_s=0.5, weight_margin_s=0.2)
    fake.stats.max_weight_in_window = 0
    venue.limiter.history = []
    started = time.monotonic()
    balances = await asyncio.gather(*(venue.balances() for _ in range(40)))  # 800 weight
    elapsed = time.monotonic() - started
    assert all(b["USDT"] == (parse_e8("1000000"), 0) for b in balances)
    assert fake.stats.rate_limited == 0
    assert fake.stats.max_weight_in_window <= 200
    assert venue.limiter.max_in_window(0.5) <= 200
    assert elapsed >= 3 * 0.5  # four windows' worth of weight needs three waits


async def test_the_venue_polls_only_live_orders_and_forgets_old_finished_ones(
    fake: FakeBinance, make_venue: MakeVenue, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cdb.venues.binance import venue as venue_module

    monkeypatch.setattr(venue_module, "FINISHED_KEPT", 2)
    venue = await make_venue()
    for n in (1, 2, 3):
        assert await venue.submit(order(n))  # a market order: filled at once
    assert venue.open_orders() == []
    assert venue._live == {}
    assert sorted(venue._by_cid) == ["cdb-test-2", "cdb-test-3"]  # the newest finished
    assert await venue.submit(order(3)) == []  # a resend of a remembered one
    assert fake.order_arrivals == ["cdb-test-1", "cdb-test-2", "cdb-test-3"]
