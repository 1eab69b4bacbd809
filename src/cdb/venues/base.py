"""The venue seam: place and cancel orders, and learn of fills.

A venue reports executions as ``Execution`` records; the execution service turns
them into ``Fill`` events with envelopes. ``on_trades`` lets a simulated venue match
against the live trade feed; a real venue returns executions it has learnt of.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from cdb.events import Order, OrderStatus, Trade


class Execution(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One (partial) execution of an order on a venue."""

    order: Order
    ts: int
    price_e8: int
    qty_e8: int
    fee_e8: int
    venue_fill_id: str
    status: OrderStatus
    cum_qty_e8: int
    trade_id: str = ""
    """Id of the market trade it matched (paper) for the audit trail."""


class Venue(Protocol):
    """What execution drives."""

    name: str

    async def submit(self, order: Order) -> list[Execution]:
        """Place ``order`` (idempotent on its client order id); executions so far."""
        ...

    async def cancel(self, order_id: str) -> bool:
        """Cancel an open order; False when it was not open."""
        ...

    async def on_trades(self, trades: Sequence[Trade]) -> list[Execution]:
        """Market trades seen; executions they caused (simulated venues)."""
        ...

    def open_orders(self) -> list[Order]:
        """Orders resting on the venue."""
        ...
