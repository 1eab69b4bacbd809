"""Redis Streams bus specifics: trimming, pub/sub notification, dead letters, lost groups,
outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from cdb.bus.keys import Namespace
from cdb.bus.redis_publish import decode_notification
from cdb.bus.redis_streams import RedisStreamsBus, read_to_end
from cdb.errors import BusClosedError, BusError
from cdb.events import Alert, encode
from cdb.testing.redis import RedisServer

pytestmark = pytest.mark.integration

Eventually = Callable[..., Awaitable[Any]]
MakeBus = Callable[..., RedisStreamsBus]
TOPIC = "stream.signals"


def alerts(n: int, start: int = 0) -> list[Alert]:
    return [
        Alert(id=f"a{i}", ts=i, correlation_id="", causation_id="", source="t", level="info",
              code="c", message="m")
        for i in range(start, start + n)
    ]


@pytest.fixture
async def make_bus(redis_client: aioredis.Redis, namespace: str) -> AsyncIterator[MakeBus]:
    made: list[RedisStreamsBus] = []

    def factory(**options: Any) -> RedisStreamsBus:
        bus = RedisStreamsBus(redis_client, Namespace(namespace), **options)
        made.append(bus)
        return bus

    yield factory
    for bus in made:
        await bus.close()


@pytest.fixture
async def private_redis() -> AsyncIterator[aioredis.Redis]:
    """A client of a server of the test's own, for tests that wipe the whole server."""
    async with RedisServer() as server:
        client = server.client()
        yield client
        await client.aclose()


@pytest.fixture
async def private_bus(
    private_redis: aioredis.Redis, namespace: str
) -> AsyncIterator[RedisStreamsBus]:
    async with RedisStreamsBus(private_redis, Namespace(namespace)) as bus:
        yield bus


async def test_streams_are_trimmed_near_maxlen(
    make_bus: MakeBus, redis_client: aioredis.Redis, namespace: str
) -> None:
    bus = make_bus()
    for start in range(0, 25_000, 1000):
        await bus.publish(TOPIC, alerts(1000, start))
    length = await redis_client.xlen(f"{namespace}:{TOPIC}")
    assert 10_000 <= length <= 10_100


async def test_empty_namespace_uses_the_contract_names(redis_server: RedisServer) -> None:
    # A db of its own: the other tests' keys all live under a namespace.
    client = redis_server.client(db=1)
    try:
        async with RedisStreamsBus(client, Namespace("")) as bus:
            await bus.publish("stream.orders", alerts(1))
        assert await client.exists("stream.orders") == 1
        assert await client.keys("*") == [b"stream.orders"]
    finally:
        await client.flushdb()
        await client.aclose()


async def test_publish_notifies_the_contract_pubsub_topic_once_per_batch(
    make_bus: MakeBus, redis_client: aioredis.Redis, namespace: str
) -> None:
    bus = make_bus()
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"{namespace}:signals", f"{namespace}:fills")
    try:
        for _ in range(2):  # the subscribe confirmations
            assert await pubsub.get_message(timeout=1.0) is not None
        await bus.publish("stream.fills", alerts(2))  # no pub/sub topic in the contract
        await bus.publish(TOPIC, alerts(20))
        message = await pubsub.get_message(timeout=1.0)
        assert message is not None
        assert message["channel"] == f"{namespace}:signals".encode()
        assert decode_notification(message["data"]) == alerts(20)
        assert await pubsub.get_message(timeout=0.1) is None
    finally:
        await pubsub.aclose()


async def test_malformed_entries_are_dead_lettered_and_reading_goes_on(
    make_bus: MakeBus, redis_client: aioredis.Redis, namespace: str
) -> None:
    bus = make_bus()
    key = f"{namespace}:{TOPIC}"
    sub = bus.subscribe([TOPIC], "g", "c1")
    await bus.publish(TOPIC, alerts(1))
    garbage_id = await redis_client.xadd(key, {"e": b"\xc1not msgpack"})
    no_field_id = await redis_client.xadd(key, {"other": b"x"})
    await bus.publish(TOPIC, alerts(1, 1))

    batches = await sub.read(timeout=1.0)
    assert [e.id for b in batches for e in b.events] == ["a0", "a1"]
    await sub.ack(batches)
    assert await bus.pending(TOPIC, "g") == 0
    assert bus.dead_lettered == {TOPIC: 2}

    dead = await redis_client.xrange(f"{namespace}:{TOPIC}.dead")
    assert [fields[b"id"] for _, fields in dead] == [garbage_id, no_field_id]
    garbage, no_field = (fields for _, fields in dead)
    assert garbage[b"e"] == b"\xc1not msgpack"
    assert garbage[b"reason"].startswith(b"undecodable")
    assert garbage[b"stream"] == key.encode()
    assert garbage[b"group"] == b"g"
    assert no_field[b"reason"] == b"no 'e' field"


async def test_entry_delivered_more_than_max_deliveries_is_dead_lettered(
    make_bus: MakeBus, redis_client: aioredis.Redis, namespace: str
) -> None:
    bus = make_bus(max_deliveries=3)
    first = bus.subscribe([TOPIC], "g", "c1")
    second = bus.subscribe([TOPIC], "g", "c2")
    await bus.publish(TOPIC, alerts(1))
    assert len(await first.read(timeout=1.0)) == 1  # delivery 1
    assert len(await second.claim(min_idle=0)) == 1  # 2
    assert len(await first.claim(min_idle=0)) == 1  # 3
    assert await second.claim(min_idle=0) == []  # 4: parked instead
    assert await bus.pending(TOPIC, "g") == 0
    [(_, fields)] = await redis_client.xrange(f"{namespace}:{TOPIC}.dead")
    assert fields[b"reason"] == b"delivered 4 times (max_deliveries=3)"
    assert fields[b"e"] == encode(alerts(1)[0])


async def test_claim_idle_makes_read_reclaim_entries_of_a_dead_consumer(
    make_bus: MakeBus, eventually: Eventually
) -> None:
    bus = make_bus(claim_idle=0.2)
    dead = bus.subscribe([TOPIC], "g", "c1")
    alive = bus.subscribe([TOPIC], "g", "c2")
    await bus.publish(TOPIC, alerts(2))
    assert len((await dead.read(timeout=1.0))[0].events) == 2
    batches = await eventually(lambda: alive.read(timeout=0.05))
    assert [e.id for b in batches for e in b.events] == ["a0", "a1"]


async def test_pending_counts_entries_when_redis_reports_no_lag(
    make_bus: MakeBus, redis_client: aioredis.Redis, namespace: str
) -> None:
    bus = make_bus()
    sub = bus.subscribe([TOPIC], "g", "c1")
    await bus.publish(TOPIC, alerts(5))
    await sub.read(max_events=2, timeout=1.0)
    # A deletion inside the unread range makes Redis 7 report the lag as nil.
    [_, _, _, fourth, _] = await redis_client.xrange(f"{namespace}:{TOPIC}")
    await redis_client.xdel(f"{namespace}:{TOPIC}", fourth[0])
    assert await bus.pending(TOPIC, "g") == 2 + 2


async def test_a_group_delivered_up_to_the_newest_entry_owes_nothing_whatever_redis_counts(
    make_bus: MakeBus, redis_client: aioredis.Redis, namespace: str
) -> None:
    """Redis's lag counter (entries added less entries read) can stay off after it
    reloads its AOF; a group at the newest entry has nothing waiting, and ws, which
    paces itself by this backlog, must not wait for it forever."""
    bus = make_bus()
    sub = bus.subscribe([TOPIC], "g", "c1")
    await bus.publish(TOPIC, alerts(6))
    batches = await sub.read(max_events=10, timeout=1.0)
    await sub.ack(batches)
    key = f"{namespace}:{TOPIC}"
    # The state a reload can leave: the group at the end, its read counter behind.
    await redis_client.execute_command("XGROUP", "SETID", key, "g", "$", "ENTRIESREAD", 0)
    [info] = await redis_client.xinfo_groups(key)
    assert info["lag"] == 6  # what Redis claims
    assert read_to_end(info, await redis_client.xinfo_stream(key))
    assert await bus.pending(TOPIC, "g") == 0
    # Entries that truly wait are still counted.
    await bus.publish(TOPIC, alerts(3, start=6))
    [info] = await redis_client.xinfo_groups(key)
    assert not read_to_end(info, await redis_client.xinfo_stream(key))
    assert await bus.pending(TOPIC, "g") >= 3


async def test_consumer_goes_on_after_flushall_removed_its_group(
    private_bus: RedisStreamsBus, private_redis: aioredis.Redis, eventually: Eventually
) -> None:
    bus = private_bus
    sub = bus.subscribe([TOPIC], "g", "c1")
    await bus.publish(TOPIC, alerts(2))
    await sub.ack(await sub.read(timeout=1.0))
    # Redis restarted empty: stream and group are gone.
    await private_redis.flushall()
    assert await bus.pending(TOPIC, "g") == 0
    await bus.publish(TOPIC, alerts(2, 2))
    batches = await eventually(lambda: sub.read(timeout=0.1))
    assert [e.id for b in batches for e in b.events] == ["a2", "a3"]
    await sub.ack(batches)
    assert await bus.pending(TOPIC, "g") == 0


async def test_read_blocked_during_flushall_returns_empty_and_reading_goes_on(
    private_bus: RedisStreamsBus, private_redis: aioredis.Redis, eventually: Eventually
) -> None:
    bus = private_bus
    sub = bus.subscribe([TOPIC], "g", "c1")
    assert await sub.read(timeout=0.01) == []
    reader = asyncio.create_task(sub.read(timeout=3.0))
    await asyncio.sleep(0.1)
    await private_redis.flushall()
    assert await asyncio.wait_for(reader, 2.0) == []
    await bus.publish(TOPIC, alerts(1))
    batches = await eventually(lambda: sub.read(timeout=0.1))
    assert [e.id for b in batches for e in b.events] == ["a0"]


async def test_claim_after_flushall_recreates_the_group(
    private_bus: RedisStreamsBus, private_redis: aioredis.Redis
) -> None:
    bus = private_bus
    sub = bus.subscribe([TOPIC], "g", "c1")
    await bus.publish(TOPIC, alerts(1))
    await sub.read(timeout=1.0)
    await private_redis.flushall()
    assert await sub.claim(min_idle=0) == []
    await bus.publish(TOPIC, alerts(1, 1))
    assert await bus.pending(TOPIC, "g") == 1


async def test_a_client_that_decodes_responses_is_refused(redis_server: RedisServer) -> None:
    client = redis_server.client(decode_responses=True)
    try:
        with pytest.raises(BusError, match="decode_responses=False"):
            RedisStreamsBus(client, Namespace("x"))
    finally:
        await client.aclose()


async def test_a_closed_bus_refuses_to_publish_and_reads_nothing(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe([TOPIC], "g", "c1")
    await bus.publish(TOPIC, alerts(1))
    await bus.close()
    with pytest.raises(BusClosedError):
        await bus.publish(TOPIC, alerts(1))
    assert await sub.read(timeout=0.01) == []


async def test_redis_outage_raises_bus_errors_and_the_bus_recovers(
    eventually: Eventually,
) -> None:
    async with RedisServer(password="s3cret") as server:
        bus = RedisStreamsBus.from_url(server.url, Namespace("outage"))
        async with bus:
            sub = bus.subscribe([TOPIC], "g", "c1")
            await bus.publish(TOPIC, alerts(1))
            await sub.ack(await sub.read(timeout=1.0))
            await asyncio.to_thread(server.stop)
            with pytest.raises(BusError, match="publish of 1 events"):
                await bus.publish(TOPIC, alerts(1, 1))
            with pytest.raises(BusError, match="XREADGROUP"):
                await sub.read(timeout=0.1)
            await asyncio.to_thread(server.start)  # same port, empty
            await bus.publish(TOPIC, alerts(1, 2))
            batches = await eventually(lambda: sub.read(timeout=0.1))
            assert [e.id for b in batches for e in b.events] == ["a2"]
        assert bus.closed


async def test_publish_reloads_its_script_after_the_script_cache_was_flushed(
    private_bus: RedisStreamsBus, private_redis: aioredis.Redis
) -> None:
    bus = private_bus
    await bus.publish(TOPIC, alerts(1))
    await private_redis.script_flush()
    await bus.publish(TOPIC, alerts(1, 1))
    sub = bus.subscribe([TOPIC], "g", "c1")
    assert [e.id for b in await sub.read(timeout=1.0) for e in b.events] == ["a0", "a1"]


async def test_with_min_replicas_a_publish_no_replica_confirmed_fails(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(min_replicas=1, replica_timeout=0.05)
    with pytest.raises(BusError, match="0 of 1 replicas confirmed within 50 ms"):
        await bus.publish(TOPIC, alerts(2))
    # The events are in (WAIT does not undo them): a retry publishes a copy.
    assert await bus.client.xlen(bus.namespace.key(TOPIC)) == 2
    assert bus.published == {}


async def test_a_large_batch_is_published_in_order_with_a_notification_per_chunk(
    make_bus: MakeBus, redis_client: aioredis.Redis, namespace: str
) -> None:
    bus = make_bus()
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"{namespace}:signals")
    try:
        assert await pubsub.get_message(timeout=1.0) is not None
        published = alerts(2500)
        await bus.publish(TOPIC, published)
        notified = []
        while message := await pubsub.get_message(timeout=0.2):
            notified.append(decode_notification(message["data"]))
        assert [len(events) for events in notified] == [1000, 1000, 500]
        assert [e for events in notified for e in events] == published
    finally:
        await pubsub.aclose()
    sub = bus.subscribe([TOPIC], "g", "c1")
    got = []
    while batches := await sub.read(max_events=1000, timeout=0.1):
        got += [e for b in batches for e in b.events]
    assert got == published


async def test_claim_drops_pending_entries_that_were_trimmed_away(make_bus: MakeBus) -> None:
    bus = make_bus(maxlen=100)
    slow = bus.subscribe([TOPIC], "g", "c1")
    other = bus.subscribe([TOPIC], "g", "c2")
    await bus.publish(TOPIC, alerts(1))
    assert len(await slow.read(timeout=1.0)) == 1
    await bus.publish(TOPIC, alerts(500, 1))  # trims a0 while it is pending
    assert await other.claim(min_idle=0) == []
    lag = await bus.pending(TOPIC, "g")
    assert 100 <= lag <= 200  # what is left is the retained, undelivered tail


async def test_deferred_acks_travel_with_the_next_read_and_are_sent_on_close(
    make_bus: MakeBus, redis_client: aioredis.Redis, namespace: str
) -> None:
    bus = make_bus()
    sub = bus.subscribe([TOPIC], "g", "c1")
    await bus.publish(TOPIC, alerts(3))
    first = await sub.read(timeout=1.0)
    sub.defer_ack(first)
    assert await bus.pending(TOPIC, "g") == 3  # nothing sent yet
    await bus.publish(TOPIC, alerts(2, 3))
    second = await sub.read(timeout=1.0)
    assert [e.id for b in second for e in b.events] == ["a3", "a4"]
    assert await bus.pending(TOPIC, "g") == 2  # the first read's acks went with it
    sub.defer_ack(second)
    await sub.close()
    assert await bus.pending(TOPIC, "g") == 0
    assert await redis_client.xpending(f"{namespace}:{TOPIC}", "g") == {
        "pending": 0, "min": None, "max": None, "consumers": []}


async def test_notifications_are_published_only_while_someone_listens(
    private_bus: RedisStreamsBus, private_redis: aioredis.Redis, namespace: str
) -> None:
    bus, redis_client = private_bus, private_redis
    await bus.publish(TOPIC, alerts(5))  # nobody listens: no PUBLISH at all
    assert "cmdstat_publish" not in await redis_client.info("commandstats")
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"{namespace}:signals")
    try:
        assert await pubsub.get_message(timeout=1.0) is not None
        await bus.publish(TOPIC, alerts(2, 5))
        message = await pubsub.get_message(timeout=1.0)
        assert message is not None
        assert [e.id for e in decode_notification(message["data"])] == ["a5", "a6"]
    finally:
        await pubsub.aclose()


async def test_a_paused_redis_fails_calls_within_the_socket_timeout() -> None:
    """A frozen server (SIGSTOP) accepts connections but never answers: publishing,
    connecting (its AUTH) included, fails within the timeout instead of hanging, and
    works again once the server goes on."""
    import time

    async with RedisServer(password="pw") as server:
        client = server.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        async with RedisStreamsBus(client, Namespace("paused"), owns_client=True) as bus:
            server.pause()
            try:
                started = time.monotonic()
                with pytest.raises(BusError, match="publish of 1 events"):
                    await bus.publish(TOPIC, alerts(1))  # the lane connects now
                assert time.monotonic() - started < 3.0
            finally:
                server.resume()
            await bus.publish(TOPIC, alerts(1, 1))
            assert await client.xlen(f"paused:{TOPIC}") == 1


async def test_a_consumer_takes_up_its_own_pending_entries_before_new_ones(
    private_redis: aioredis.Redis,
) -> None:
    """Entries delivered to this consumer whose reply never arrived (a crash, a dropped
    connection) come back first, in their order, not after newer ones by a claim."""
    key = f"o:{TOPIC}"
    async with RedisStreamsBus(private_redis, Namespace("o")) as bus:
        sub = bus.subscribe([TOPIC], "g", "c1")
        await bus.publish(TOPIC, alerts(2))
        await sub.ack(await sub.read(timeout=1.0))

        async def delivered_but_lost(start: int) -> None:
            await bus.publish(TOPIC, alerts(3, start))
            await private_redis.xreadgroup("g", "c1", {key: ">"}, count=3)
            await bus.publish(TOPIC, alerts(2, start + 3))

        # A dropped connection: the read fails, then resumes with what was delivered.
        await delivered_but_lost(2)
        await private_redis.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(BusError, match="XREADGROUP"):
            await sub.read(timeout=0.1)
        ids = []
        for _ in range(3):
            batches = await sub.read(timeout=0.1)
            ids += [e.id for b in batches for e in b.events]
            await sub.ack(batches)
        assert ids == ["a2", "a3", "a4", "a5", "a6"]

        # A restarted consumer of the same name: its predecessor's pending ones first.
        await delivered_but_lost(7)
        again = bus.subscribe([TOPIC], "g", "c1")
        first = await again.read(timeout=0.1)
        assert [e.id for b in first for e in b.events] == ["a7", "a8", "a9"]
        await again.ack(first)
        second = await again.read(timeout=0.1)
        assert [e.id for b in second for e in b.events] == ["a10", "a11"]


async def test_an_entry_that_keeps_taking_its_consumer_down_is_dead_lettered(
    private_redis: aioredis.Redis,
) -> None:
    """Read again from the consumer's own pending list after each crash, the entry's
    delivery count still grows, and past max_deliveries it is parked, not handed out."""
    key = f"o:{TOPIC}"
    async with RedisStreamsBus(private_redis, Namespace("o"), max_deliveries=2) as bus:
        await bus.subscribe([TOPIC], "g", "c1").ensure_groups()
        await bus.publish(TOPIC, alerts(1))
        await private_redis.xreadgroup("g", "c1", {key: ">"}, count=1)  # crash no. 1
        first = await bus.subscribe([TOPIC], "g", "c1").read(timeout=0.1)  # crash no. 2
        assert [e.id for b in first for e in b.events] == ["a0"]
        third = await bus.subscribe([TOPIC], "g", "c1").read(timeout=0.1)
        assert third == []
        assert await private_redis.xlen(f"{key}.dead") == 1


async def test_a_closed_subscription_gives_its_connection_back(make_bus: MakeBus) -> None:
    bus = make_bus()
    for i in range(5):
        sub = bus.subscribe([TOPIC], f"g{i}", "c1")
        await sub.ensure_groups()  # its own connection, now open
        await sub.close()
    assert bus._lanes == []
