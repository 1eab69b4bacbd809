"""The venue seam: place and cancel orders, and learn of fills.

A venue reports executions as ``Execution`` records; the execution service turns
them into ``Fill`` events with envelopes. ``on_trades`` lets a simulated venue match
against the live trade feed; a real venue returns executions it has learnt of.

``Venue`` is what every venue does; ``Reconciles``, ``Closes``, ``ReportsUpdates`` and
``KeepsLedger`` are what some do, and callers ask ``isinstance(venue, Reconciles)``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

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


class VenueOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the venue reports it (exact)."""

    symbol: str
    venue_order_id: int
    client_order_id: str
    side: str
    type: str
    status: str
    orig_qty_e8: int
    executed_qty_e8: int
    price_e8: int
    time_ms: int


class VenueUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """An order that ended other than filled (expired, cancelled, rejected)."""

    order: Order
    status: OrderStatus
    reason: str
    filled_qty_e8: int
    ts: int


class ReconcileReport(msgspec.Struct, kw_only=True):
    """What reconciliation found.

    ``adopted``: orders cdb knows, found on the venue (now tracked). ``not_on_venue``:
    client ids cdb knows that the venue never saw (safe to send). ``unknown_open``: open
    on the venue, unknown to cdb. ``missing_fills``: executions cdb had not recorded
    (publish them). ``unresolved``: client ids that could not be looked up.
    ``unknown_fills``: recent executions on the account that cdb has no record of and
    that belong to no order it is resolving (a trade made outside cdb, or an order cdb
    took for finished), as ``<venue fill id> (venue order <id>)``.
    """

    adopted: list[VenueOrder] = msgspec.field(default_factory=list)
    not_on_venue: list[str] = msgspec.field(default_factory=list)
    unknown_open: list[VenueOrder] = msgspec.field(default_factory=list)
    missing_fills: list[Execution] = msgspec.field(default_factory=list)
    unresolved: list[str] = msgspec.field(default_factory=list)
    unknown_fills: list[str] = msgspec.field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing differs between cdb and the venue."""
        return not (self.not_on_venue or self.unknown_open or self.missing_fills
                    or self.unresolved or self.unknown_fills)


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


@runtime_checkable
class Reconciles(Protocol):
    """A venue that compares cdb's records with its own at start."""

    async def reconcile(
        self, orders: Iterable[Order], *, known_fill_ids: Collection[str] = (),
        filled: Mapping[str, tuple[int, int]] | None = None,
        recent_client_ids: Collection[str] = (),
        scan_since_ms: int | None = None, scan_symbols: Collection[str] = (),
        recorded_fill_ids: Collection[str] = (),
    ) -> ReconcileReport:
        """Adopt the ``orders`` found on the venue; report what differs."""
        ...


@runtime_checkable
class Closes(Protocol):
    """A venue holding a connection to close when its host stops."""

    async def aclose(self) -> None:
        """Release the connection (idempotent)."""
        ...


@runtime_checkable
class ReportsUpdates(Protocol):
    """A venue on which orders can end other than filled (expired, rejected)."""

    def take_updates(self) -> list[VenueUpdate]:
        """Orders that ended other than filled since the last call."""
        ...


@runtime_checkable
class KeepsLedger(Protocol):
    """A venue keeping its own record of executions (to audit the database)."""

    @property
    def ledger(self) -> Collection[Execution]:
        """The newest executions."""
        ...
