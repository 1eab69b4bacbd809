"""Smoke: the event models are exact, round-trip on the wire, and identify trades."""

from decimal import Decimal

import pytest

from cdb.errors import DecodeError
from cdb.events import (
    Fill,
    IdGen,
    Trade,
    decode,
    encode,
    fmt_e8,
    from_json,
    parse_e8,
    to_decimal,
    to_json,
    trade_event_id,
)


def _trade(trade_id: int = 1) -> Trade:
    tid = trade_event_id("binance", "BTCUSDT", trade_id)
    return Trade(
        id=tid, ts=1_700_000_000_000_000_000, correlation_id=tid, causation_id=tid, source="ws",
        venue="binance", symbol="BTCUSDT", trade_id=trade_id, price_e8=parse_e8("43210.12345678"),
        qty_e8=parse_e8("0.001"),
    )


@pytest.mark.parametrize(
    ("text", "e8"),
    [("43210.12345678", 4321012345678), ("0.1", 10_000_000), ("7", 700_000_000),
     ("-1.5", -150_000_000), ("0.000000010", 1), ("12.", 1_200_000_000)],
)
def test_prices_parse_exactly_to_fixed_point(text: str, e8: int) -> None:
    assert parse_e8(text) == e8
    assert to_decimal(e8) == Decimal(text)


def test_precision_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 8 decimals"):
        parse_e8("0.123456789")


def test_events_round_trip_on_the_wire_exactly() -> None:
    trade = _trade()
    assert decode(encode(trade)) == trade
    assert from_json(to_json(trade)) == trade
    assert fmt_e8(trade.price_e8) == "43210.12345678"


def test_the_same_exchange_trade_always_has_the_same_id() -> None:
    assert _trade(5).id == _trade(5).id != _trade(6).id


def test_malformed_wire_data_raises_decode_error_with_context() -> None:
    with pytest.raises(DecodeError, match=r"stream\.fills/1-0"):
        decode(b"\x81\xa4type\xa4fill", where="stream.fills/1-0")
    fill_json = b'{"type": "fill", "id": "x"}'
    with pytest.raises(DecodeError):
        from_json(fill_json)
    assert Fill.__struct_config__.frozen


def test_created_ids_are_unique_and_time_ordered() -> None:
    gen = IdGen("risk-1")
    ids = [gen.next(ts) for ts in (5, 5, 6, 1_000, 10**18)]
    assert len(set(ids)) == len(ids)
    assert ids[2:] == sorted(ids[2:])
