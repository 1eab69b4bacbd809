"""PostgreSQL stopped and started while db_writer works: every fill lands once, and
nothing is acknowledged before it is committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.integration.resilience.rig import Producer, Rig, fill_ids, settings_for

from cdb.bus.keys import FILLS
from cdb.observability.health import Health
from cdb.observability.metrics import REGISTRY
from cdb.services.db_writer import DbWriterService
from cdb.testing.postgres import PostgresServer, PostgresServerError
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_postgres_stopped_and_started_during_writes_lands_every_fill_once(
    redis_server: RedisServer, namespace: str, tmp_path: Path, rig_factory: list[Rig],
) -> None:
    try:
        pg = await asyncio.to_thread(PostgresServer().__enter__)
    except PostgresServerError as exc:
        pytest.exit(f"cannot run the resilience tests: {exc}", returncode=3)
    try:
        settings = settings_for(tmp_path, namespace, redis_port=redis_server.port)
        rig = Rig(settings)
        rig_factory.append(rig)
        schema = f"cdb_{namespace}"
        writer = await rig.db_writer(pg.url, schema)
        health = Health("db_writer", "dbw-1", "test")
        health.add("postgres", writer.probe, critical=False)
        producer = Producer(await rig.bus("execution", "exec-1"), "p1", batch=3)
        producer.start()

        async def stored(n: int) -> bool:
            return len(await fill_ids(pg.url, schema)) >= n

        await eventually_async(lambda: stored(150), 15, "fills flowing")
        await asyncio.to_thread(pg.stop)
        await eventually_async(lambda: _waiting(writer), 15, "db_writer holding")
        report = await health.check()
        assert report.status == "degraded"
        assert report.dependencies["postgres"].status == "down"
        labels = {"service": "db_writer", "instance": "dbw-1"}
        assert (REGISTRY.get_sample_value("cdb_held_events", labels) or 0) > 0
        await asyncio.sleep(1.5)
        held_at = len(producer.sent)
        pending = await producer.bus.pending(FILLS, "db_writer")
        assert pending > 0, "nothing acknowledged while the database is down"
        await asyncio.to_thread(pg.start)
        await asyncio.sleep(0.5)
        await producer.stop()
        assert len(producer.sent) > held_at

        await eventually_async(lambda: stored(len(producer.sent)), 30, "every fill stored")
        rows = await fill_ids(pg.url, schema)
        assert len(rows) == len(set(rows)) == len(producer.sent)
        assert set(rows) == set(producer.sent)

        async def acked() -> bool:
            return await producer.bus.pending(FILLS, "db_writer") == 0

        await eventually_async(acked, 10, "all acknowledged after the commit")
        assert writer.waiting_since is None
        assert writer.outages >= 1
        assert (await health.check()).status == "healthy"
    finally:
        for r in rig_factory:
            await r.close()
        rig_factory.clear()
        await asyncio.to_thread(pg.close)


async def _waiting(writer: DbWriterService) -> bool:
    return writer.waiting_since is not None
