"""Event types and their envelope: frozen msgspec Structs, no I/O.

Prices, quantities and money are fixed-point integers with eight decimals (``*_e8``
fields, the precision Binance quotes in): exact on the wire and in the database, and
about ten times cheaper to build than ``Decimal`` on the hot path. ``to_decimal`` and
``fmt_e8`` convert for people; ``parse_e8`` converts exchange strings exactly.

Every event carries the envelope of the spec: ``id`` (unique; time-ordered for events
cdb creates, derived from venue, symbol and exchange trade id for trades), ``ts``
(event time, ns), ``correlation_id`` (the trade that started the chain),
``causation_id`` (the event that caused this one), ``source`` (service instance) and
``v`` (schema version).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, Literal

import msgspec

from cdb.errors import DecodeError

SCALE: Final = 100_000_000
"""Fixed-point scale of every ``*_e8`` field."""
_DECIMALS: Final = 8
_PAD: Final = "0" * _DECIMALS

Side = Literal["BUY", "SELL"]
OrderType = Literal["MARKET", "LIMIT"]
OrderStatus = Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED"]
FINAL_STATUSES: Final = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
"""Order statuses after which nothing more happens to an order."""
Level = Literal["info", "warning", "critical"]
SCHEMA_VERSION: Final = 1


def parse_e8(text: str) -> int:
    """Parse a decimal string such as ``"30123.45"`` exactly into e8 fixed point.

    Raises:
        ValueError: not a plain decimal number, or more than eight decimals that are
            not zeros (precision would be lost).
    """
    whole, dot, frac = text.partition(".")
    if not dot:
        return int(whole) * SCALE
    if len(frac) > _DECIMALS:
        if frac[_DECIMALS:].strip("0"):
            raise ValueError(f"{text!r} has more than {_DECIMALS} decimals")
        frac = frac[:_DECIMALS]
    if not frac.isdigit() and frac:
        raise ValueError(f"{text!r} is not a decimal number")
    sign = -1 if whole.startswith("-") else 1
    return int(whole or "0") * SCALE + sign * int((frac + _PAD)[:_DECIMALS] or "0")


def fmt_e8(value: int) -> str:
    """Format an e8 integer as an exact decimal string without trailing zeros."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), SCALE)
    text = f"{frac:0{_DECIMALS}d}".rstrip("0")
    return f"{sign}{whole}.{text}" if text else f"{sign}{whole}"


def to_decimal(value: int) -> Decimal:
    """Exact ``Decimal`` of an e8 integer."""
    return Decimal(value).scaleb(-_DECIMALS)


def mul_e8(a: int, b: int) -> int:
    """Product of two e8 numbers in e8 (for notional = price x qty), rounded toward zero."""
    product = a * b
    return product // SCALE if product >= 0 else -((-product) // SCALE)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """The envelope every event carries."""

    id: str
    ts: int
    correlation_id: str
    causation_id: str
    source: str
    v: int = SCHEMA_VERSION


class Trade(Event, frozen=True, kw_only=True, tag="trade", gc=False):
    """One exchange trade (a print on the tape)."""

    venue: str
    symbol: str
    trade_id: int
    price_e8: int
    qty_e8: int
    buyer_maker: bool = False


class Signal(Event, frozen=True, kw_only=True, tag="signal", gc=False):
    """A strategy's wish to trade, before risk."""

    strategy_id: str
    symbol: str
    side: Side
    price_e8: int
    """Price of the trade that triggered the signal (the reference price)."""
    trade_id: int
    """Exchange id of the trade that triggered it."""
    move_bp: int
    """The move that triggered it, in basis points (signed)."""
    volume_e8: int
    """Quote volume traded within the strategy's window."""


class Order(Event, frozen=True, kw_only=True, tag="order", gc=False):
    """An order command approved by risk, for execution."""

    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    qty_e8: int
    price_e8: int = 0
    """Limit price; 0 for a market order."""
    ref_price_e8: int
    """Price the decision was made at (for slippage and exposure)."""
    ref_trade_id: int = 0
    """Exchange id of the last trade known at the decision (fills come after it)."""
    reduce_only: bool = False


class RiskDecision(Event, frozen=True, kw_only=True, tag="risk_decision", gc=False):
    """Risk's rejection of a signal, with the reason (approvals are the orders)."""

    signal_id: str
    symbol: str
    side: Side
    approved: bool
    reason: str
    detail: str = ""


class Fill(Event, frozen=True, kw_only=True, tag="fill", gc=False):
    """An execution of (part of) an order on a venue."""

    order_id: str
    client_order_id: str
    venue: str
    symbol: str
    side: Side
    price_e8: int
    qty_e8: int
    fee_e8: int
    venue_fill_id: str
    order_status: OrderStatus
    cum_qty_e8: int


class OrderUpdate(Event, frozen=True, kw_only=True, tag="order_update", gc=False):
    """An order's state changed without a fill (cancelled, rejected, expired)."""

    order_id: str
    client_order_id: str
    symbol: str
    status: OrderStatus
    reason: str
    filled_qty_e8: int


class Alert(Event, frozen=True, kw_only=True, tag="alert", gc=False):
    """Something an operator should know."""

    level: Level
    code: str
    message: str


class EssChange(Event, frozen=True, kw_only=True, tag="ess_change", gc=False):
    """The emergency stop system changed state."""

    state: Literal["ACTIVE", "HALTED"]
    reason: str
    actor: str
    detail: str = ""


class CancelOrders(Event, frozen=True, kw_only=True, tag="cancel_orders", gc=False):
    """A command from risk to execution: cancel open orders (the emergency stop's).

    It travels on ``stream.orders`` with the orders, so execution sees it after every
    order risk approved before it, and none of those is left open.
    """

    reason: str
    symbol: str = ""
    """Only this symbol's orders; empty for every symbol."""
    keep_reduce_only: bool = True
    """Leave orders that only reduce a position: HALTED still lets those out."""


AnyEvent = (
    Trade | Signal | Order | RiskDecision | Fill | OrderUpdate | Alert | EssChange | CancelOrders
)

_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder: msgspec.msgpack.Decoder[AnyEvent] = msgspec.msgpack.Decoder(AnyEvent)
_json_encoder = msgspec.json.Encoder()
_json_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def encode(event: AnyEvent) -> bytes:
    """Encode an event for the wire (msgpack)."""
    return _msgpack_encoder.encode(event)


def decode(data: bytes, where: str = "") -> AnyEvent:
    """Decode a wire event; a malformed one raises ``DecodeError`` naming ``where``."""
    try:
        return _msgpack_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(str(exc), where) from exc


def to_json(event: AnyEvent) -> bytes:
    """Encode an event as JSON (APIs, logs, reports)."""
    return _json_encoder.encode(event)


def from_json(data: bytes | str, where: str = "") -> AnyEvent:
    """Decode a JSON event; a malformed one raises ``DecodeError``."""
    try:
        return _json_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(str(exc), where) from exc


def trade_event_id(venue: str, symbol: str, trade_id: int) -> str:
    """The id of a trade: the same trade received twice gets the same id."""
    return f"{venue}:{symbol}:{trade_id}"


class IdGen:
    """Time-ordered unique ids for events cdb creates.

    ``<ts as 16 hex digits>-<node>-<sequence>``: sorts by event time, unique across
    instances through ``node``, and deterministic for a replay (no system time, no
    randomness), which is what makes two runs with one seed agree.
    """

    __slots__ = ("_node", "_seq")

    def __init__(self, node: str) -> None:
        self._node = node
        self._seq = 0

    def next(self, ts: int) -> str:
        """A new id for an event at ``ts`` (ns)."""
        self._seq += 1
        return f"{ts:016x}-{self._node}-{self._seq:x}"

    @staticmethod
    def derived(ts: int, key: str) -> str:
        """The id of an event fully determined by ``key`` (what caused it).

        A service restarted mid-stream re-derives the same id for the same effect, so
        a redelivered cause never makes a second, differently named event.
        """
        return f"{ts:016x}-{key}"
