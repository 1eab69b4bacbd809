"""ws's pacer holds the feed while a consumer group that is being read falls behind,
whatever the group's name (a shard's too), and is not held by a contract group that
sharding left without readers."""

from __future__ import annotations

from pathlib import Path

from tests.integration.resilience.rig import Rig, settings_for

from cdb.bus.keys import MARKET_DATA
from cdb.events import Trade
from cdb.runtime.distributed import DOWNSTREAM_OF_MARKET_DATA, LagPacer
from cdb.testing.redis import RedisServer


def trades(n: int, start: int = 0) -> list[Trade]:
    return [Trade(id=f"t{i}", ts=i, correlation_id=f"t{i}", causation_id=f"t{i}",
                  source="ws", venue="x", symbol="BTCUSDT", trade_id=i, price_e8=1, qty_e8=1)
            for i in range(start, start + n)]


async def test_lag_counts_read_groups_shards_included_and_skips_orphans(
    volatile_redis_server: RedisServer, namespace: str, tmp_path: Path,
    rig_factory: list[Rig],
) -> None:
    rig = Rig(settings_for(tmp_path, namespace, redis_port=volatile_redis_server.port))
    rig_factory.append(rig)
    bus = await rig.bus("ws", "ws-1")
    pacer = LagPacer(bus, None)
    for group in DOWNSTREAM_OF_MARKET_DATA:  # as ws does at start
        await bus.inner.subscribe([MARKET_DATA], group, "ws-1").ensure_groups()
    await bus.publish(MARKET_DATA, trades(300))
    # Nobody reads yet: every group counts, so the consumers' start is not outrun.
    assert await pacer.lag() == 300

    # Sharded signal: its shards read in their own groups; the plain group stays empty.
    shard = bus.inner.subscribe([MARKET_DATA], "signal.shard-a", "signal-a-1")
    others = [bus.inner.subscribe([MARKET_DATA], g, f"{g}-1") for g in ("risk", "execution")]
    for sub in (shard, others[0]):
        while batches := await sub.read(1000, 0.05):
            await sub.ack(batches)
    assert await pacer.lag() == 300, "execution has not started reading: it still counts"
    while batches := await others[1].read(1000, 0.05):
        await others[1].ack(batches)
    assert await pacer.lag() == 0, "the plain group sharding leaves unread must not hold ws"

    await bus.publish(MARKET_DATA, trades(120, 300))
    for sub in others:
        while batches := await sub.read(1000, 0.05):
            await sub.ack(batches)
    assert await pacer.lag() == 120, "a lagging shard holds ws like any group"
    for sub in (shard, *others):
        await sub.close()
