"""Where the ESS state survives a restart: Redis (the shared, current state) and the
database (every change, as ``EssChange`` rows).

The risk service saves each change to every store it has and, at start, takes the
newest state any of them knows, so it comes back HALTED if it was, even when one of
the two lost its data (a Redis restarted without persistence, a database restored
from an older backup). The embedded mode has no Redis: the database alone serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

import msgspec
import structlog

from cdb.bus.keys import Namespace
from cdb.errors import DataRejectedError, StoreError
from cdb.events import EssChange
from cdb.risk.ess import EssState

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from cdb.storage.store import Store

ESS_KEY: Final = "ess:state"
"""The Redis key (under the namespace) holding the current ESS state as JSON."""

_log = structlog.get_logger(component="ess.persistence")


class EssStore(Protocol):
    """Keeps the ESS state across restarts."""

    async def load(self) -> EssState | None:
        """The last saved state; None when nothing was ever saved."""
        ...

    async def save(self, state: EssState, change: EssChange) -> None:
        """Make ``state`` (reached by ``change``) durable; raise if it could not be."""
        ...


def state_of(change: EssChange) -> EssState:
    """The state an ``EssChange`` record led to."""
    return EssState(state=change.state, reason=change.reason, detail=change.detail,
                    actor=change.actor, since_ns=change.ts)


class MemoryEssStore:
    """An in-process store (tests, and what a restart within one process keeps)."""

    def __init__(self, state: EssState | None = None) -> None:
        self.state = state
        self.changes: list[EssChange] = []

    async def load(self) -> EssState | None:
        return self.state

    async def save(self, state: EssState, change: EssChange) -> None:
        self.state = state
        self.changes.append(change)


class RedisEssStore:
    """The current state under ``<namespace>:ess:state``, shared by every risk instance.

    Args:
        client: a Redis client (binary responses).
        namespace: the pipeline's namespace (``SERVICE_INSTANCE_NAME``).
    """

    def __init__(self, client: aioredis.Redis, namespace: Namespace) -> None:
        self._client = client
        self.key = namespace.key(ESS_KEY)

    async def load(self) -> EssState | None:
        raw = await self._client.get(self.key)
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=EssState)
        except msgspec.DecodeError as exc:
            # A key someone overwrote by hand must not decide the state on its own.
            _log.error("ignoring an unreadable ESS state in Redis", key=self.key,
                       error=str(exc))
            return None

    async def save(self, state: EssState, change: EssChange) -> None:
        await self._client.set(self.key, msgspec.json.encode(state))


class DatabaseEssStore:
    """The ``ess_changes`` table: the latest row is the state.

    ``save`` writes the change at once (the db_writer writes it again from the bus,
    which the store's idempotence on event ids turns into nothing), so a trip is
    durable before the risk service goes on.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def load(self) -> EssState | None:
        changes = await self._store.read(EssChange)
        if not changes:
            return None
        latest = max(changes, key=lambda c: (c.ts, c.id))
        return state_of(latest)

    async def save(self, state: EssState, change: EssChange) -> None:
        await self._store.write([change])


class LayeredEssStore:
    """The distributed mode's pair: Redis holds the state, the database records it.

    ``load`` needs both to answer and takes the newer state (a restart must know the
    whole truth before it trades: Redis may have lost its data, the database may lag).
    ``save`` needs Redis; the database write is best effort, because the db_writer
    records the same ``EssChange`` from the bus anyway.

    Args:
        primary: the shared current state (Redis).
        record: the record of changes (the database).
    """

    def __init__(self, primary: EssStore, record: EssStore) -> None:
        self.primary = primary
        self.record = record

    async def load(self) -> EssState | None:
        first = await self.primary.load()
        second = await self.record.load()
        if first is None or (second is not None and second.since_ns > first.since_ns):
            return second
        return first

    async def save(self, state: EssState, change: EssChange) -> None:
        await self.primary.save(state, change)
        try:
            await self.record.save(state, change)
        except (StoreError, DataRejectedError, OSError) as exc:
            _log.warning("ESS change not written to the database now; the db_writer "
                         "records it from the bus", error=str(exc), event_id=change.id)
