"""Following a Sentinel failover: leave a master the Sentinels no longer name."""

from __future__ import annotations

import structlog
from redis.asyncio.sentinel import SentinelConnectionPool

_log = structlog.get_logger("cdb.bus.redis")


async def follow_master(pool: SentinelConnectionPool) -> bool:
    """Ask the Sentinels where the master is; when it moved, leave the old one: idle
    connections are dropped (by redis-py) and busy ones reconnect once released.
    Returns whether it moved."""
    before = pool.master_address
    after = await pool.get_master_address()  # type: ignore[no-untyped-call]
    if before is None or after == before:
        return False
    await pool.update_active_connections_for_reconnect()  # type: ignore[no-untyped-call]
    _log.warning("Redis master moved (Sentinel failover)", old=before, new=after)
    return True
