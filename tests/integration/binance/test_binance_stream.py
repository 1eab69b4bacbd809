"""The Binance trade stream source against FakeBinance: reconnects without duplicates,
detects gaps and stale feeds, survives duplicated and reordered messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from tests.integration.binance.conftest import Eventually

from cdb.events import Trade
from cdb.marketdata.binance import BinanceTradeSource, Gap, Staleness
from cdb.testing.fake_binance import FakeBinance, Fault

pytestmark = pytest.mark.integration
MakeSource = Callable[..., tuple[BinanceTradeSource, list[Trade]]]


def ids(trades: list[Trade], symbol: str = "BTCUSDT") -> list[int]:
    return [t.trade_id for t in trades if t.symbol == symbol]


async def connected(fake: FakeBinance, eventually: Eventually, times: int = 1) -> None:
    """Wait until the fake has accepted ``times`` connections and one is open."""
    await eventually(lambda: fake.stats.ws_connects >= times and fake.stats.ws_open >= 1)


async def test_trades_arrive_exact_with_stable_ids(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    source, got = make_source(fake.ws_url)
    await connected(fake, eventually)
    sent = [fake.trade("BTCUSDT", "42000.12345678", "0.00100001", buyer_maker=True),
            fake.trade("ETHUSDT", "2300.5", "1.5")]
    await fake.publish(sent)
    await eventually(lambda: len(got) == 2)
    by_symbol = {t.symbol: t for t in got}
    for trade in sent:
        received = by_symbol[trade.symbol]
        assert received.id == trade.id == f"binance:{trade.symbol}:1"
        assert (received.price_e8, received.qty_e8, received.buyer_maker) == (
            trade.price_e8, trade.qty_e8, trade.buyer_maker)
        assert received.ts == trade.ts // 1_000_000 * 1_000_000  # Binance sends ms
    assert source.connected
    assert source.connects == 1


async def test_dropped_socket_reconnects_detects_the_gap_and_never_duplicates(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    seen_gaps: list[Gap] = []
    source, got = make_source(fake.ws_url, on_gap=seen_gaps.append)
    await connected(fake, eventually)
    await fake.publish([fake.trade("BTCUSDT", "42000") for _ in range(3)])
    await eventually(lambda: len(got) == 3)
    fake.drop_streams()
    await fake.publish([fake.trade("BTCUSDT", "42001")])  # nobody is listening: lost
    await connected(fake, eventually, times=2)
    await fake.publish([fake.trade("BTCUSDT", "42002") for _ in range(2)])
    await eventually(lambda: len(got) == 5)
    assert ids(got) == [1, 2, 3, 5, 6]
    assert seen_gaps == [Gap(symbol="BTCUSDT", after_id=3, next_id=5)]
    assert seen_gaps[0].missing == 1
    assert source.connects == 2


async def test_an_overlap_after_reconnect_is_published_once(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    source, got = make_source(fake.ws_url)
    await connected(fake, eventually)
    first = [fake.trade("BTCUSDT", "42000") for _ in range(3)]
    await fake.publish(first)
    await eventually(lambda: len(got) == 3)
    fake.drop_streams(1001)
    await connected(fake, eventually, times=2)
    await fake.publish([*first[1:], fake.trade("BTCUSDT", "42003")])  # replayed overlap
    await eventually(lambda: source.duplicates == 2 and len(got) == 4)
    assert ids(got) == [1, 2, 3, 4]
    assert len({t.id for t in got}) == 4


async def test_duplicated_messages_are_published_once(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    source, got = make_source(fake.ws_url)
    await connected(fake, eventually)
    fake.inject(Fault(kind="ws_duplicate", times=3))
    await fake.publish([fake.trade("BTCUSDT", "42000") for _ in range(4)])
    await eventually(lambda: source.duplicates == 3)
    await asyncio.sleep(0.05)
    assert ids(got) == [1, 2, 3, 4]


async def test_reordered_messages_all_arrive_once(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    source, got = make_source(fake.ws_url)
    await connected(fake, eventually)
    fake.inject(Fault(kind="ws_reorder", times=2))
    for _ in range(6):
        await fake.publish([fake.trade("BTCUSDT", "42000")])
    await eventually(lambda: len(got) == 6)
    assert sorted(ids(got)) == [1, 2, 3, 4, 5, 6]
    assert ids(got) != [1, 2, 3, 4, 5, 6]  # the fault did take effect
    # A late trade may have been reported as a gap first; it is never dropped.
    assert source.late >= 1
    assert source.duplicates == 0


async def test_skipped_trades_are_a_gap(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    source, got = make_source(fake.ws_url)
    await connected(fake, eventually)
    await fake.publish([fake.trade("ETHUSDT", "2300")])
    fake.inject(Fault(kind="ws_skip", times=2))
    await fake.publish([fake.trade("ETHUSDT", "2300") for _ in range(3)])
    await eventually(lambda: len(got) == 2)
    assert ids(got, "ETHUSDT") == [1, 4]
    assert [g.missing for g in source.gaps] == [2]


async def test_a_stale_feed_is_flagged_then_cleared(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    changes: list[Staleness] = []

    async def on_stale(change: Staleness) -> None:
        changes.append(change)

    source, _got = make_source(fake.ws_url, stale_after_s=0.4, on_stale=on_stale)
    await connected(fake, eventually)
    await eventually(lambda: source.stale_symbols == {"BTCUSDT", "ETHUSDT"}, within=3.0)
    assert changes[-1].symbols == ("BTCUSDT", "ETHUSDT")
    assert changes[-1].silent_s > 0.4
    with pytest.raises(ConnectionError, match="no trades"):
        await source.probe()
    await fake.publish([fake.trade("BTCUSDT", "42000"), fake.trade("ETHUSDT", "2300")])
    await eventually(lambda: not source.stale_symbols, within=3.0)
    assert changes[-1].symbols == ()
    await source.probe()


async def test_a_silent_connection_is_replaced(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    source, got = make_source(fake.ws_url, reconnect_after_s=0.3)
    await connected(fake, eventually)
    fake.inject(Fault(kind="ws_silence", times=None, duration_s=0.6))
    await fake.publish([fake.trade("BTCUSDT", "42000")])  # swallowed by the silence
    await eventually(lambda: source.connects >= 2, within=3.0)
    await asyncio.sleep(0.4)
    await fake.publish([fake.trade("BTCUSDT", "42001")])
    await eventually(lambda: ids(got) == [2])
    assert "no message" in source.last_error


async def test_refused_connections_are_retried_with_backoff(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    refusals = fake.inject(Fault(kind="ws_refuse", times=3))
    source, got = make_source(fake.ws_url)
    await eventually(lambda: source.connected)
    assert refusals.fired == 3
    assert source.connects == 1
    await fake.publish([fake.trade("BTCUSDT", "42000")])
    await eventually(lambda: len(got) == 1)


async def test_the_24h_disconnect_is_survived_and_server_pings_answered(
    make_source: MakeSource, eventually: Eventually,
) -> None:
    async with FakeBinance(symbols=["BTCUSDT"], ws_max_lifetime_s=0.5,
                           ws_ping_interval_s=0.1) as fake:
        source, got = make_source(fake.ws_url, symbols=("BTCUSDT",))
        await connected(fake, eventually)
        await fake.publish([fake.trade("BTCUSDT", "42000")])
        await eventually(lambda: source.connects >= 2, within=3.0)
        await connected(fake, eventually, times=2)
        await fake.publish([fake.trade("BTCUSDT", "42001")])
        await eventually(lambda: ids(got) == [1, 2])
        assert source.gaps == []


async def test_a_malformed_message_is_counted_and_skipped(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    source, got = make_source(fake.ws_url)
    await connected(fake, eventually)
    for conn in fake.streams.conns:
        conn.queue.put_nowait('{"stream":"btcusdt@trade","data":{"e":"trade","p":"x"}}')
    await fake.publish([fake.trade("BTCUSDT", "42000")])
    await eventually(lambda: len(got) == 1)
    assert source.decode_errors == 1


async def test_the_source_feeds_from_a_synthetic_market(
    fake: FakeBinance, make_source: MakeSource, eventually: Eventually,
) -> None:
    from cdb.marketdata.synthetic import SyntheticSource

    synthetic = SyntheticSource(seed=3, symbols=["BTCUSDT", "ETHUSDT"], duration_s=20.0,
                                venue="binance", bursts_per_hour=0)
    expected = [t for batch in synthetic.batches() for t in batch]
    source, got = make_source(fake.ws_url)
    await connected(fake, eventually)
    await fake.feed(synthetic.batches(), speed=None)
    await eventually(lambda: len(got) == len(expected), within=5.0)
    assert [(t.id, t.price_e8, t.qty_e8) for t in got] == [
        (t.id, t.price_e8, t.qty_e8) for t in expected]
    assert source.gaps == []
    assert source.duplicates == 0
