"""db_writer: persists signals, orders, fills, alerts and risk events, in batches.

Every batch read is committed in one transaction before it is acknowledged, and the
store's writes are idempotent on event ids, so a redelivered event never makes a
second row and nothing is acknowledged before it is durable.
"""

from __future__ import annotations

from typing import ClassVar

from cdb.bus.base import Batch
from cdb.bus.keys import ALERTS_STREAM, FILLS, ORDERS, RISK_EVENTS, SIGNALS
from cdb.events import AnyEvent
from cdb.runtime.service import Service, ServiceContext
from cdb.storage.store import Store


class DbWriterService(Service):
    """Writes the events of the pipeline to the database of record."""

    name: ClassVar[str] = "db_writer"
    inputs: ClassVar[tuple[str, ...]] = (SIGNALS, ORDERS, FILLS, RISK_EVENTS, ALERTS_STREAM)
    batch_size: ClassVar[int] = 5000

    def __init__(self, ctx: ServiceContext, store: Store) -> None:
        super().__init__(ctx)
        self.store = store
        self.written = 0

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        await self.store.write(events)
        self.written += len(events)

    async def handle_batches(self, batches: list[Batch]) -> None:
        # One transaction for the whole read: fewer commits, same all-or-nothing ack.
        events = [e for b in batches for e in b.events]
        await self.store.write(events)
        self.written += len(events)

    def status(self) -> dict[str, object]:
        return {"written": self.written}
