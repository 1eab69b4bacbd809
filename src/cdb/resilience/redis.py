"""Redis connections for the distributed mode, built on redis-py's own retry/backoff."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cdb.bus.keys import Namespace
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.config import Settings


def make_redis(settings: Settings) -> aioredis.Redis:
    """An asyncio Redis client with redis-py's own retry and exponential backoff."""
    # An empty password (set on purpose) means a Redis without AUTH.
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return aioredis.Redis(
        host=settings.redis_host or "127.0.0.1", port=settings.redis_port, db=settings.redis_db,
        password=password or None, decode_responses=False, socket_timeout=5.0,
        socket_connect_timeout=3.0, health_check_interval=15,
        retry=Retry(ExponentialWithJitterBackoff(cap=30.0, base=1.0), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def make_bus(settings: Settings, client: aioredis.Redis) -> RedisStreamsBus:
    """The distributed bus of this process (namespaced by SERVICE_INSTANCE_NAME)."""
    return RedisStreamsBus(client, Namespace(settings.service_instance_name), owns_client=True)
