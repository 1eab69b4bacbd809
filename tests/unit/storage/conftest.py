"""Fixtures of the SQLite store tests: a migrated database file per test, and a factory
of complete event chains (trade, signal, decision or order, fills, updates)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cdb.events import (
    Alert,
    AnyEvent,
    EssChange,
    Fill,
    Order,
    OrderUpdate,
    RiskDecision,
    Signal,
    Trade,
    trade_event_id,
)
from cdb.storage import Store, migrate

T0 = 1_700_000_000_000_000_000
PRICE = 3_012_345_000_000  # 30123.45


class Chain:
    """One trade's events, as the services would publish them.

    Args:
        n: makes ids unique between chains.
        rejected: risk rejects the signal instead of ordering.
    """

    PRICE = PRICE

    def __init__(self, n: int, *, rejected: bool = False) -> None:
        self.n = n
        ts = T0 + n * 1_000_000
        self.trade = Trade(
            id=trade_event_id("binance", "BTCUSDT", n), ts=ts, correlation_id="",
            causation_id="", source="ws-1", venue="binance", symbol="BTCUSDT", trade_id=n,
            price_e8=PRICE, qty_e8=50_000_000,
        )  # fmt: skip
        tid = self.trade.id
        self.signal = Signal(
            id=f"sig-{n}", ts=ts + 1_000, correlation_id=tid, causation_id=tid,
            source="signal-1", strategy_id="momentum", symbol="BTCUSDT", side="BUY",
            price_e8=PRICE, trade_id=n, move_bp=-312, volume_e8=123_456_789_000_000,
        )  # fmt: skip
        self.decision: RiskDecision | None = None
        self.order: Order | None = None
        self.fills: list[Fill] = []
        self.updates: list[OrderUpdate] = []
        if rejected:
            self.decision = RiskDecision(
                id=f"dec-{n}", ts=ts + 2_000, correlation_id=tid, causation_id=self.signal.id,
                source="risk-1", signal_id=self.signal.id, symbol="BTCUSDT", side="BUY",
                approved=False, reason="max_exposure", detail="would exceed 10000 USDT",
            )  # fmt: skip
            return
        self.order = order = Order(
            id=f"ord-{n}", ts=ts + 2_000, correlation_id=tid, causation_id=self.signal.id,
            source="risk-1", client_order_id=f"cdb-{n}", symbol="BTCUSDT", side="BUY",
            order_type="LIMIT", qty_e8=2_000_000, price_e8=PRICE, ref_price_e8=PRICE,
            ref_trade_id=n, reduce_only=True,
        )  # fmt: skip
        for i, qty in enumerate((1_500_000, 500_000)):
            self.fills.append(
                Fill(
                    id=f"fill-{n}-{i}", ts=ts + 3_000 + i * 1_000, correlation_id=tid,
                    causation_id=order.id, source="exec-1", order_id=f"venue-{n}",
                    client_order_id=order.client_order_id, venue="paper", symbol="BTCUSDT",
                    side="BUY", price_e8=PRICE + i, qty_e8=qty, fee_e8=1_234,
                    venue_fill_id=f"vf-{n}-{i}",
                    order_status="PARTIALLY_FILLED" if i == 0 else "FILLED",
                    cum_qty_e8=1_500_000 + i * 500_000,
                )
            )  # fmt: skip
        self.updates.append(
            OrderUpdate(
                id=f"upd-{n}", ts=ts + 6_000, correlation_id=tid, causation_id=order.id,
                source="exec-1", order_id=f"venue-{n}", client_order_id=order.client_order_id,
                symbol="BTCUSDT", status="EXPIRED", reason="", filled_qty_e8=2_000_000,
            )
        )  # fmt: skip

    def alert(self) -> Alert:
        """An alert raised by this chain's trade."""
        return Alert(
            id=f"alert-{self.n}", ts=self.signal.ts + 10, correlation_id=self.trade.id,
            causation_id=self.trade.id, source="risk-1", level="critical",
            code="flash_crash", message="BTCUSDT -15.2% in 42 s ✓",
        )  # fmt: skip

    def ess(self) -> EssChange:
        """The ESS trip that followed ``alert``."""
        return EssChange(
            id=f"ess-{self.n}", ts=self.signal.ts + 20, correlation_id=self.trade.id,
            causation_id=f"alert-{self.n}", source="risk-1", state="HALTED",
            reason="flash_crash", actor="auto",
        )  # fmt: skip

    @property
    def events(self) -> list[AnyEvent]:
        """The persisted events, in publish order (the trade is not among them)."""
        out: list[AnyEvent] = [self.signal]
        if self.decision is not None:
            out.append(self.decision)
        if self.order is not None:
            out.append(self.order)
        out.extend(self.fills)
        out.extend(self.updates)
        return out


@pytest.fixture
def make_chain() -> type[Chain]:
    """``make_chain(n)`` makes chain ``n``; with ``rejected=True`` risk rejects it."""
    return Chain


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cdb.db'}"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A running Store on a freshly migrated SQLite file."""
    await migrate(db_url)
    async with Store(db_url) as store:
        yield store
