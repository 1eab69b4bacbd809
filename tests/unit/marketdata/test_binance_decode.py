"""Decoding Binance trade stream messages: real samples, exact decimals, stable ids."""

from __future__ import annotations

import pytest

from cdb.errors import DecodeError
from cdb.events import trade_event_id
from cdb.marketdata.binance import (
    LIVE_WS_URL,
    BinanceTradeSource,
    decode_combined,
    decode_trade,
    stream_url,
)

# From Binance's spot websocket documentation (Trade Streams), as published.
DOC_SAMPLE = """{
  "e": "trade",
  "E": 1672515782136,
  "s": "BNBBTC",
  "t": 12345,
  "p": "0.001",
  "q": "100",
  "T": 1672515782136,
  "m": true,
  "M": true
}"""
# The older documented form, with buyer and seller order ids (still decodes).
OLD_DOC_SAMPLE = (
    '{"e":"trade","E":123456789,"s":"BNBBTC","t":12345,"p":"0.001","q":"100",'
    '"b":88,"a":50,"T":123456785,"m":true,"M":true}'
)
# A combined-stream message as the live stream sends it (eight decimals).
COMBINED_SAMPLE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1704067200123,"s":"BTCUSDT",'
    b'"t":3345678901,"p":"42283.58000000","q":"0.00120000","T":1704067200122,"m":false,'
    b'"M":true}}'
)


def test_documented_trade_sample_decodes_exactly() -> None:
    trade = decode_trade(DOC_SAMPLE)
    assert trade.symbol == "BNBBTC"
    assert trade.trade_id == 12345
    assert trade.price_e8 == 100_000  # 0.001
    assert trade.qty_e8 == 100 * 100_000_000
    assert trade.ts == 1672515782136 * 1_000_000
    assert trade.buyer_maker is True
    assert trade.id == trade_event_id("binance", "BNBBTC", 12345)
    assert trade.correlation_id == trade.id


def test_older_sample_with_order_ids_decodes() -> None:
    trade = decode_trade(OLD_DOC_SAMPLE, source="ws-1")
    assert (trade.trade_id, trade.ts, trade.source) == (12345, 123456785 * 1_000_000, "ws-1")


def test_combined_stream_message_decodes_exactly() -> None:
    trade = decode_combined(COMBINED_SAMPLE)
    assert trade is not None
    assert trade.price_e8 == 4_228_358_000_000
    assert trade.qty_e8 == 120_000
    assert trade.trade_id == 3345678901
    assert trade.buyer_maker is False
    assert trade.id == "binance:BTCUSDT:3345678901"


def test_same_trade_twice_has_the_same_id() -> None:
    assert decode_combined(COMBINED_SAMPLE) == decode_combined(COMBINED_SAMPLE)


def test_microsecond_trade_time_is_recognised() -> None:
    message = DOC_SAMPLE.replace('"T": 1672515782136', '"T": 1672515782136123')
    assert decode_trade(message).ts == 1672515782136123 * 1_000


def test_subscription_reply_is_not_market_data() -> None:
    assert decode_combined('{"result":null,"id":1}') is None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ('{"stream":"btcusdt@trade","data":{"e":"trade"}}', "missing"),
        (COMBINED_SAMPLE.replace(b"42283.58000000", b"4.2e4"), "decimal"),
        (COMBINED_SAMPLE.replace(b'"e":"trade"', b'"e":"aggTrade"'), "not a trade"),
        (b"not json", "malformed"),
    ],
)
def test_malformed_messages_raise_decode_error(message: bytes | str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_combined(message)


def test_more_than_eight_decimals_is_refused_not_rounded() -> None:
    with pytest.raises(DecodeError, match="decimals"):
        decode_trade(DOC_SAMPLE.replace('"0.001"', '"0.000000001"'))


def test_stream_url_is_the_combined_form_in_lowercase() -> None:
    assert stream_url(LIVE_WS_URL, ["BTCUSDT", "ethusdt"]) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
    )
    assert stream_url("http://127.0.0.1:9/", ["X"]) == "ws://127.0.0.1:9/stream?streams=x@trade"
    assert stream_url("https://h", ["X"]).startswith("wss://h/stream")


def test_a_source_needs_symbols_and_is_single_use() -> None:
    with pytest.raises(ValueError, match="symbol"):
        BinanceTradeSource([])
    source = BinanceTradeSource(["btcusdt", "BTCUSDT", "ETHUSDT"])
    assert source.symbols == ("BTCUSDT", "ETHUSDT")
