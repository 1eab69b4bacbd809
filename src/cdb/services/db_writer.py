"""db_writer: persists signals, orders, fills, alerts and risk events, in batches.

Every batch read is committed in one transaction before it is acknowledged, and the
store's writes are idempotent on event ids, so a redelivered event never makes a
second row and nothing is acknowledged before it is durable.

While the database is unavailable the batch in hand is held, unacknowledged, and the
write is retried with the backoff policy (1, 2, 4 ... 30 s by default); the outage is
logged when it starts and when it ends, health reports the database down (the
service degraded, not dead), and ``cdb_held_events`` counts what waits. A write that
hangs (a blackholed connection) is given up after ``write_timeout`` and retried the
same way. Nothing is lost meanwhile: the events stay pending in their streams.

What the database refuses for the data itself (a constraint, a value out of range) is
not an outage and is not retried: the store raises ``DataRejectedError``, which goes
through, and the service host parks the event that caused it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

from cdb.bus.base import Batch
from cdb.bus.keys import ALERTS_STREAM, FILLS, ORDERS, RISK_EVENTS, SIGNALS
from cdb.errors import StoreError
from cdb.events import AnyEvent
from cdb.observability import metrics
from cdb.resilience import metrics as resilience_metrics
from cdb.resilience.backoff import Backoff
from cdb.services.base import Service, ServiceContext
from cdb.storage.store import Store
from cdb.storage.tables import TABLE_OF

Sleep = Callable[[float], Awaitable[None]]


class DbWriterService(Service):
    """Writes the events of the pipeline to the database of record.

    Args:
        store: the database (running).
        backoff: waits between retries of a failed write.
        write_timeout: longest one write may take before it is retried (s).
        sleep: injectable for tests.
    """

    name: ClassVar[str] = "db_writer"
    inputs: ClassVar[tuple[str, ...]] = (SIGNALS, ORDERS, FILLS, RISK_EVENTS, ALERTS_STREAM)
    batch_size: ClassVar[int] = 5000

    def __init__(
        self, ctx: ServiceContext, store: Store, *, backoff: Backoff | None = None,
        write_timeout: float = 30.0, sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(ctx)
        self.store = store
        self.written = 0
        self.backoff = backoff or Backoff()
        self.write_timeout = write_timeout
        self._sleep = sleep
        self.waiting_since: float | None = None
        """Monotonic time the current outage started; None while writes go through."""
        self.last_error = ""
        self.held = 0
        self.outages = 0
        self._held_gauge = resilience_metrics.held_events.labels(ctx.name, ctx.instance)

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        await self._write(events)

    async def handle_batches(self, batches: list[Batch]) -> None:
        # One transaction for the whole read: fewer commits, same all-or-nothing ack.
        await self._write([e for b in batches for e in b.events])

    async def _write(self, events: Sequence[AnyEvent]) -> None:
        """Commit ``events``, retrying while the database is unavailable."""
        failures = 0
        while True:
            try:
                async with asyncio.timeout(self.write_timeout):
                    await self.store.write(events)
            except TimeoutError as exc:
                error: StoreError = StoreError(
                    f"write of {len(events)} events to {self.store.where} did not finish "
                    f"within {self.write_timeout} s"
                )
                error.__cause__ = exc
            except StoreError as exc:
                error = exc
            else:
                self._recovered()
                self.written += len(events)
                self._count(events)
                return
            failures += 1
            self._holding(len(events), error)
            await self._sleep(self.backoff.compute(failures))

    def _count(self, events: Sequence[AnyEvent]) -> None:
        """Rows committed per table (``cdb_db_rows_written_total``: the DbWriterFailing
        alert watches it against the fills flowing)."""
        per_table = Counter(TABLE_OF[type(e)].name for e in events if type(e) in TABLE_OF)
        for table, n in per_table.items():
            metrics.rows_written.labels(self.ctx.name, self.ctx.instance, table).inc(n)

    def _holding(self, n: int, error: StoreError) -> None:
        self.last_error = str(error)
        self.held = n
        self._held_gauge.set(n)
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
            self.outages += 1
            self.ctx.log.warning(
                "database unavailable; holding events unacknowledged and retrying",
                events=n, error=self.last_error,
            )

    def _recovered(self) -> None:
        if self.waiting_since is None:
            return
        self.ctx.log.info(
            "database available again", held=self.held,
            after_s=round(time.monotonic() - self.waiting_since, 3),
        )
        self.waiting_since = None
        self.held = 0
        self._held_gauge.set(0)

    async def probe(self) -> None:
        """Health probe of the database: down while a write is being retried, else a
        ping bounded by the write timeout.

        Raises:
            StoreError: the database is unavailable.
        """
        if self.waiting_since is not None:
            waited = time.monotonic() - self.waiting_since
            raise StoreError(
                f"holding {self.held} events for {waited:.1f} s: {self.last_error}"
            )
        try:
            async with asyncio.timeout(min(self.write_timeout, 5.0)):
                await self.store.ping()
        except TimeoutError as exc:
            raise StoreError(f"ping of {self.store.where} timed out") from exc

    def status(self) -> dict[str, object]:
        return {
            "written": self.written,
            "waiting_for_database": self.waiting_since is not None,
            "held_events": self.held,
            "database_outages": self.outages,
        }
