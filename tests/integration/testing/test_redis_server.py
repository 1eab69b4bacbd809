"""The throwaway redis-server: own port, restartable in place, clear error when missing."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from cdb.errors import LifecycleError
from cdb.testing.redis import RedisServer, RedisServerError

pytestmark = pytest.mark.integration


def test_server_answers_and_restarts_empty_on_the_same_port() -> None:
    with RedisServer() as server:
        assert server.running
        client = redis.Redis.from_url(server.url)
        try:
            client.set("k", "v")
            port = server.port
            server.stop()
            assert not server.running
            with pytest.raises(redis.ConnectionError):
                client.ping()
            server.start()
            assert server.port == port
            assert client.get("k") is None  # no persistence: a restart is empty
        finally:
            client.close()
    assert not server.running
    with pytest.raises(LifecycleError):
        server.start()


def test_an_aof_server_keeps_its_data_over_a_restart_and_wipe_empties_it() -> None:
    with RedisServer(args=("--appendonly", "yes")) as server:
        client = redis.Redis.from_url(server.url)
        try:
            client.set("k", "v")
            server.stop()
            server.start()
            assert client.get("k") == b"v"  # the AOF brought it back
            with pytest.raises(LifecycleError):
                server.wipe()  # not while it runs
            server.stop()
            server.wipe()
            server.start()
            assert client.get("k") is None
            assert client.dbsize() == 0
        finally:
            client.close()


async def test_password_is_required_and_carried_by_the_url() -> None:
    async with RedisServer(password="s3cret") as server:
        assert server.url == f"redis://:s3cret@127.0.0.1:{server.port}/0"
        # Without retries, which would only delay the authentication error.
        anonymous = aioredis.Redis(host=server.host, port=server.port, retry=None)
        authorised = aioredis.Redis.from_url(server.url)
        try:
            with pytest.raises(redis.AuthenticationError):
                await anonymous.ping()
            assert await authorised.ping()
        finally:
            await anonymous.aclose()
            await authorised.aclose()


def test_a_missing_redis_server_names_the_fix() -> None:
    with (
        pytest.raises(RedisServerError, match=r"was not found: install it .*CDB_REDIS_SERVER"),
        RedisServer(executable="/nonexistent/redis-server"),
    ):
        pass


def test_a_server_that_cannot_start_reports_its_log() -> None:
    with (
        pytest.raises(RedisServerError, match="exited at start"),
        RedisServer(args=("--no-such-option", "1")),
    ):
        pass
