"""A producer killed (-9) while its events sit in the disk buffer: restarted, it flushes
them to Redis first, in order, before anything new."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.integration.resilience.rig import fill, settings_for

from cdb.bus.keys import FILLS, Namespace
from cdb.bus.redis import make_bus, make_redis
from cdb.events import decode
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

_PRODUCER = textwrap.dedent("""
    import asyncio, json, sys, time
    from cdb.bus.keys import FILLS
    from cdb.config import load_settings
    from cdb.bus.redis import make_bus, make_redis
    from tests.integration.resilience.rig import fill

    async def main() -> None:
        settings = load_settings(environ=json.loads(sys.argv[1]))
        bus = make_bus(settings, make_redis(settings), service="ws", instance="ws-1")
        await bus.start()
        for seq in range(0, 500, 10):
            await bus.publish(FILLS, [fill("p1", seq + i) for i in range(10)])
        print("BUFFERED", bus.buffered, flush=True)
        time.sleep(60)  # holds the buffer open, and everything in it, until killed

    asyncio.run(main())
""")


async def test_a_killed_producer_flushes_its_buffer_when_restarted(
    redis_server: RedisServer, namespace: str, tmp_path: Path,
) -> None:
    env = {
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port), "REDIS_PASSWORD": "",
        "SERVICE_INSTANCE_NAME": namespace, "CDB_SECRETS_DIR": str(tmp_path / "none"),
        "CDB_BACKOFF_BASE_S": "0.05", "CDB_BACKOFF_CAP_S": "0.5", "REDIS_SOCKET_TIMEOUT_S": "1",
        "CDB_BUFFER_DIR": str(tmp_path / "buffers"),
    }
    await asyncio.to_thread(redis_server.stop)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PRODUCER, json.dumps(env), stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[3],
    )
    assert proc.stdout is not None
    try:
        line = ""
        while not line.startswith("BUFFERED"):  # its log lines come first
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert raw, "the producer exited early"
            line = raw.decode()
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert line.split() == ["BUFFERED", "500"], "Redis was down: all went to the disk buffer"

    await asyncio.to_thread(redis_server.start)
    settings = settings_for(tmp_path, namespace, redis_port=redis_server.port)
    client = redis_server.client()
    try:
        bus = make_bus(settings, make_redis(settings), service="ws", instance="ws-1")
        assert bus.buffer.path.exists()
        async with bus:
            await bus.publish(FILLS, [fill("p1", 500)])  # new: must come after the rest

            async def flushed() -> bool:
                return bus.buffered == 0

            await eventually_async(flushed, 10, "buffer flushed at start")
        entries = await client.xrange(Namespace(namespace).key(FILLS))
        ids = [decode(fields[b"e"]).id for _, fields in entries]
        assert ids == [fill("p1", i).id for i in range(501)]
    finally:
        await client.aclose()
