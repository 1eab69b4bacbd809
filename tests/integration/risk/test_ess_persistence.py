"""The ESS state in real Redis and PostgreSQL: a restarted risk service comes back
HALTED if it was, even when one of the two lost its data."""

from __future__ import annotations

import redis.asyncio as aioredis

from cdb.bus.keys import ALERTS_STREAM, ORDERS, Namespace
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.clock import WallClock
from cdb.events import SCALE, CancelOrders, EssChange
from cdb.risk.ess import EssConfig, EssState
from cdb.risk.limits import RiskLimits
from cdb.risk.persistence import DatabaseEssStore, LayeredEssStore, RedisEssStore
from cdb.services.base import ServiceContext
from cdb.services.risk import RiskService
from cdb.storage.store import Store

S = 1_000_000_000
T0 = 1_704_067_200 * S
HALTED = EssState(state="HALTED", reason="flash_crash", detail="BTCUSDT fell 20 %",
                  actor="risk-1", since_ns=T0)
RESET = EssState(state="ACTIVE", reason="manual_reset", detail="calm", actor="alice",
                 since_ns=T0 + 600 * S)


def change_of(state: EssState, n: int = 1) -> EssChange:
    return EssChange(id=f"ess-{n}", ts=state.since_ns, correlation_id=f"ess-{n}",
                     causation_id="", source=state.actor, state=state.state,
                     reason=state.reason, actor=state.actor, detail=state.detail)


async def test_redis_keeps_the_state_under_the_namespaced_key(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    store = RedisEssStore(redis_client, Namespace(namespace))
    assert store.key == f"{namespace}:ess:state"
    assert await store.load() is None
    await store.save(HALTED, change_of(HALTED))
    assert await RedisEssStore(redis_client, Namespace(namespace)).load() == HALTED
    assert await RedisEssStore(redis_client, Namespace(namespace + "x")).load() is None


async def test_an_unreadable_redis_value_is_ignored(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    await redis_client.set(f"{namespace}:ess:state", b"not json")
    assert await RedisEssStore(redis_client, Namespace(namespace)).load() is None


async def test_the_database_gives_the_latest_recorded_change(store: Store) -> None:
    records = DatabaseEssStore(store)
    assert await records.load() is None
    await records.save(HALTED, change_of(HALTED, 1))
    await records.save(RESET, change_of(RESET, 2))
    await records.save(RESET, change_of(RESET, 2))  # the db_writer writing it again
    assert await records.load() == RESET
    assert len(await store.read(EssChange)) == 2


async def test_with_redis_emptied_the_database_still_says_halted(
    redis_client: aioredis.Redis, namespace: str, store: Store
) -> None:
    layered = LayeredEssStore(RedisEssStore(redis_client, Namespace(namespace)),
                              DatabaseEssStore(store))
    await layered.save(HALTED, change_of(HALTED))
    await redis_client.delete(f"{namespace}:ess:state")  # Redis restarted without data
    assert await layered.load() == HALTED


async def test_the_newer_of_redis_and_the_database_wins(
    redis_client: aioredis.Redis, namespace: str, store: Store
) -> None:
    shared = RedisEssStore(redis_client, Namespace(namespace))
    records = DatabaseEssStore(store)
    await records.save(HALTED, change_of(HALTED, 1))
    await shared.save(RESET, change_of(RESET, 2))  # the db_writer has not caught up
    assert await LayeredEssStore(shared, records).load() == RESET
    later = EssState(state="HALTED", reason="manual", actor="bob", since_ns=T0 + 900 * S)
    await records.save(later, change_of(later, 3))  # by hand on the database (cdb ess --db)
    loaded = await LayeredEssStore(shared, records).load()
    assert loaded is not None
    assert (loaded.state, loaded.actor) == ("HALTED", "bob")


async def test_a_restarted_risk_service_over_redis_and_postgres_stays_halted(
    redis_client: aioredis.Redis, namespace: str, store: Store
) -> None:
    ns = Namespace(namespace)

    buses: list[RedisStreamsBus] = []

    def service(instance: str) -> tuple[RiskService, RedisStreamsBus]:
        bus = RedisStreamsBus(redis_client, ns)
        buses.append(bus)
        ctx = ServiceContext(name="risk", instance=instance, bus=bus, clock=WallClock())
        shared = RedisEssStore(redis_client, ns)
        return RiskService(
            ctx, RiskLimits(), 100_000 * SCALE, ess=EssConfig(cooldown_ns=3600 * S),
            ess_store=LayeredEssStore(shared, DatabaseEssStore(store)), ess_watch=shared,
        ), bus

    first, _ = service("risk-1")
    await first.on_start()
    assert await first.trip_manually("alice", "drill") is not None
    assert (await RedisEssStore(redis_client, ns).load()) == first.ess.state
    recorded = await store.read(EssChange)
    assert [(c.state, c.actor, c.detail) for c in recorded] == [("HALTED", "alice", "drill")]

    second, bus = service("risk-2")
    await second.on_start()
    assert second.halted
    assert second.ess.state == first.ess.state
    events = await bus.client.xrange(ns.key(ORDERS))
    assert len(events) == 2, "a cancel command at the trip and again at the restart"
    from cdb.events import decode

    assert all(isinstance(decode(fields[b"e"]), CancelOrders) for _, fields in events)
    alerts = [decode(f[b"e"]) for _, f in await bus.client.xrange(ns.key(ALERTS_STREAM))]
    assert [a.code for a in alerts] == ["ess_tripped", "ess_restored"]  # type: ignore[union-attr]

    await redis_client.delete(ns.key("ess:state"))
    third, _ = service("risk-3")
    await third.on_start()
    assert third.halted, "the database remembers what Redis forgot"
    for each in buses:
        await each.close()
