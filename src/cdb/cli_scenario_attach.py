"""``cdb scenario run --attach``: where the running pipeline is, and a runner against it.

The Redis comes from ``--redis``, else ``REDIS_URL``, else the ``REDIS_*`` settings;
the namespace from ``--namespace``, else ``SERVICE_INSTANCE_NAME``; PostgreSQL (the
database checks) from ``--postgres``, else ``DATABASE_URL``, else ``POSTGRES_HOST``;
the fault proxy's API from ``--proxy``. Faults the attach target cannot inject end
``unknown`` with the reason (see ``cdb.chaos.targets.attach``).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from cdb.chaos.targets.attach import AttachConfig, AttachTarget, find_services, redis_client
from cdb.config import Settings, load_settings
from cdb.errors import CdbError, ConfigError, InputError
from cdb.runtime.discovery import InstanceRecord
from cdb.urls import check_url, postgres_endpoint, redact_url

if TYPE_CHECKING:
    from cdb.chaos.run.plan import Use
    from cdb.chaos.run.runner import Runner

_MARKET_FAULTS = frozenset({"flash_crash", "spike", "gap", "stale", "flat"})


def attach_config(redis: str | None, postgres: str | None, proxy: str | None,
                  namespace: str | None, mode: str | None) -> AttachConfig:
    """The options of ``--attach`` checked, with their fallbacks from the environment.

    Raises:
        CdbError: one line naming the option (a URL shown without its password).
    """
    if mode not in (None, "distributed"):
        raise ConfigError([f"--mode {mode}: --attach runs against processes (distributed)"])
    settings: Settings | None = None
    try:
        settings = load_settings()
    except CdbError:
        settings = None  # the environment is not a service's: only the options count
    redis = redis or os.environ.get("REDIS_URL") or (
        settings.redis_url() if settings is not None and settings.redis_host else None)
    if not redis:
        raise ConfigError(["--attach needs the pipeline's Redis: --redis URL, REDIS_URL or "
                           "REDIS_HOST"])
    check_url("--redis", redis, ("redis", "rediss"))
    if postgres is None:
        postgres = os.environ.get("DATABASE_URL") or (
            settings.postgres_url() if settings is not None and settings.postgres_host
            else None)
    if postgres is not None:
        postgres_endpoint(postgres)
    if proxy is not None:
        check_url("--proxy", proxy, ("http", "https"))
    name = namespace if namespace is not None else os.environ.get("SERVICE_INSTANCE_NAME", "")
    try:
        Settings.model_validate({"service_instance_name": name or None})
    except ValidationError:
        raise ConfigError([f"--namespace: {name!r} is not a namespace (lowercase letters, "
                           "digits, '-' and '.')"]) from None
    return AttachConfig(redis_url=redis, namespace=name, postgres_url=postgres,
                        proxy_url=proxy)


def find_pipeline(config: AttachConfig) -> dict[str, InstanceRecord]:
    """The running services, or a clear ``InputError`` when there are none."""
    async def look() -> dict[str, InstanceRecord]:
        client = redis_client(config.redis_url)
        try:
            return await find_services(client, config.namespace)
        finally:
            await client.aclose()

    where = f"namespace {config.namespace or '(default)'!r} of {redact_url(config.redis_url)}"
    try:
        found = asyncio.run(look())
    except (RedisError, OSError) as exc:
        raise InputError(f"--attach: cannot read the registry in {where}: {exc}") from None
    if not found:
        raise InputError(f"--attach: no running pipeline in {where} (start one with cdb up, "
                         "with the same SERVICE_INSTANCE_NAME)")
    return found


def attach_runner(scenario: Any, options: Any, config: AttachConfig) -> Any:
    """A runner whose target is the running pipeline; market shapes (the market is the
    pipeline's own) are marked unavailable so that they end unknown with the reason."""
    from cdb.chaos.run.runner import Runner

    runner = Runner(scenario, options, target_factory=lambda plan: AttachTarget(plan, config))
    for use in market_faults(runner):
        use.impl.unavailable = ("attach mode cannot shape the market of a running pipeline "
                                "(its ws generates or reads its own)")
    return runner


def market_faults(runner: Runner) -> list[Use]:
    """The planned uses of market-shape faults."""
    return [u for u in runner.planned.uses
            if u.kind == "fault" and u.provider.type in _MARKET_FAULTS]
