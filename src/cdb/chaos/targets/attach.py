"""The attach target: a pipeline already running (``cdb up``), found through discovery.

Nothing is started and nothing of the user's is stopped: the services are found in
the registry of their namespace (``SERVICE_INSTANCE_NAME``) in the given Redis, and
observed as in distributed mode (their ``/health`` and ``/metrics`` from the
addresses they registered, the streams read by a consumer group of the coordinator
starting at the attach, the database of the namespace when a PostgreSQL URL is
given). Process faults act by pid on this host: SIGSTOP/SIGCONT always, SIGKILL and
SIGTERM only when a supervisor will restart the process (``cdb up`` tells each child
its restart count, ``CDB_RESTARTS``). Network faults need cdb's proxy (or a
Toxiproxy) already placed in front of Redis or PostgreSQL and its API (``--proxy``).
Everything else (taking Redis or PostgreSQL down, market shapes, sabotage) raises
``Unavailable``: the run reports it ``unknown`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError

from cdb.bus.keys import ALL_STREAMS, DEAD_LETTER_SUFFIX, SERVICES, Namespace
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.chaos.scenario.registry import Unavailable
from cdb.chaos.targets.base import Plan, scenario_env
from cdb.chaos.targets.db import SqlReader, snapshot
from cdb.chaos.targets.distributed import RECORDER_GROUP, DistributedTarget
from cdb.config import Settings, load_settings
from cdb.errors import CdbError, InputError
from cdb.runtime.discovery import InstanceRecord, discover
from cdb.runtime.supervisor import RESTARTS_ENV

_WATCH_S = 0.5
"""How often the registry is read again (a restarted service registers a new pid)."""
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "")  # noqa: S104 - compared, not bound


class AttachConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where the running pipeline is."""

    redis_url: str
    namespace: str
    postgres_url: str | None = None
    proxy_url: str | None = None
    """API of the Toxiproxy-compatible proxy the user placed in front of Redis or
    PostgreSQL (None: no network faults)."""


def redis_client(url: str) -> aioredis.Redis:
    """A client with few, short retries (see the distributed target)."""
    return aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0,
                                   retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2))


async def find_services(client: aioredis.Redis, namespace: str) -> dict[str, InstanceRecord]:
    """The alive instance of each service of ``namespace``; of several, the newest (a
    dead one stays alive in the registry until its heartbeat expires)."""
    out: dict[str, InstanceRecord] = {}
    for reg in await discover(client, Namespace(namespace)):
        record = reg.record
        if reg.alive and record.service in SERVICES and (
                record.service not in out or record.started_ns > out[record.service].started_ns):
            out[record.service] = record
    return out


def _same_host(address: str, host: str) -> bool:
    return (address in _LOOPBACK and host in _LOOPBACK) or address == host


def process_env(pid: int) -> dict[str, str] | None:
    """The environment ``pid`` was started with (None: it cannot be read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


def _api_token() -> str:
    """The API token of the pipeline's control endpoints, from this process's settings
    (``CDB_API_TOKEN`` or ``CDB_API_TOKEN_FILE``); empty when none is set."""
    try:
        token = load_settings().cdb_api_token
    except CdbError:
        return ""
    return token.get_secret_value() if token is not None else ""


def supervised(pid: int) -> bool | None:
    """Whether a supervisor restarts ``pid`` when it exits (``cdb up`` sets
    ``CDB_RESTARTS`` for each child); None: its environment cannot be read."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return any(v.startswith(RESTARTS_ENV.encode() + b"=") for v in environ.split(b"\0"))


class AttachTarget(DistributedTarget):
    """A running pipeline (see the module docstring)."""

    mode: ClassVar[str] = "attach"

    def __init__(self, plan: Plan, config: AttachConfig) -> None:
        super().__init__(plan)
        self.config = config
        self.namespace = config.namespace
        self.records: dict[str, InstanceRecord] = {}
        self.hostname = socket.gethostname()
        self._watcher: asyncio.Task[None] | None = None
        self._made: list[str] = []
        """Stream keys this run created (its consumer group made them): removed at
        the end if still empty."""
        self._proxies: dict[str, tuple[str, str]] = {}
        """Proxies of the user's proxy: name -> (listen, upstream)."""
        self._first_read = True
        self.token = _api_token()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self._client = redis_client(cfg.redis_url)
        try:
            self.records = await find_services(self._client, cfg.namespace)
        except (RedisError, OSError) as exc:
            raise InputError(f"cannot read the registry of {cfg.namespace!r}: {exc}") from exc
        if not self.records:
            raise InputError(f"no running service registered in namespace {cfg.namespace!r}")
        self.services = tuple(s for s in SERVICES if s in self.records)
        self.ports = {s: urlsplit(r.address).port or 0 for s, r in self.records.items()}
        self.summary["attached"] = {
            "namespace": cfg.namespace,
            "services": {s: {"pid": r.pid, "host": r.host, "address": r.address,
                             "restarts": r.restarts} for s, r in self.records.items()}}
        self._limits_of_the_pipeline()
        if cfg.postgres_url:
            self.schema = Settings.model_validate(
                {"service_instance_name": cfg.namespace}).postgres_schema()
            self._sql = SqlReader(cfg.postgres_url, self.schema)
        if cfg.proxy_url:
            await self._read_proxies(cfg.proxy_url)
        self.bus = RedisStreamsBus(self._client, Namespace(cfg.namespace))
        topics = [*ALL_STREAMS, *(s + DEAD_LETTER_SUFFIX for s in ALL_STREAMS)]
        await self._groups_from_now(topics)
        sub = self.bus.subscribe(topics, RECORDER_GROUP, "recorder")
        await sub.ensure_groups()
        self._recorder = asyncio.create_task(self._record(sub), name="chaos.recorder")
        self._watcher = asyncio.create_task(self._watch(), name="chaos.attach.discovery")
        # t = 0 after the warm-up, from now: the market is the pipeline's own.
        self.market_start_ns = time.time_ns()
        self._t0_ns = self.market_start_ns + int(self.plan.warmup * 1e9)
        self.clock.set_origin(time.monotonic() + self.plan.warmup)
        self.recording.env = {"SERVICE_INSTANCE_NAME": cfg.namespace}

    def _limits_of_the_pipeline(self) -> None:
        """The checks judge against the risk limits the running risk service has (read
        from its environment), not the scenario's: those cannot be applied to it."""
        risk = self.records.get("risk")
        env = (process_env(risk.pid) if risk is not None and risk.pid and
               risk.host in ("", self.hostname) else None)
        if env is None:
            self.summary["limits"] = "the scenario's (risk's environment cannot be read)"
            return
        limits = {k: v for k, v in env.items() if k.startswith("RISK_")}
        for key in scenario_env(self.plan.scenario, self.plan.seed):
            field = Settings.model_fields.get(key.lower())
            if key.startswith("RISK_") and key not in limits and field is not None:
                limits[key] = str(field.default)  # risk runs with the default
        self.plan.env.update(limits)
        self.summary["limits"] = "the running risk service's"

    async def _groups_from_now(self, topics: list[str]) -> None:
        """The recorder's group on every stream, reading what comes after the attach
        (not the pipeline's whole history)."""
        assert self._client is not None
        ns = Namespace(self.config.namespace)
        for topic in topics:
            key = ns.key(topic)
            if not await self._client.exists(key):
                self._made.append(key)
            try:
                await self._client.xgroup_create(key, RECORDER_GROUP, id="$", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                await self._client.xgroup_setid(key, RECORDER_GROUP, id="$")

    async def _read_proxies(self, api: str) -> None:
        try:
            r = await self._http.get(f"{api.rstrip('/')}/proxies", timeout=5.0)
            r.raise_for_status()
            body: dict[str, dict[str, Any]] = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise InputError(f"--proxy: the proxy API does not answer: {exc}") from exc
        self._proxy_api = api.rstrip("/")
        self._proxies = {name: (str(p.get("listen", "")), str(p.get("upstream", "")))
                         for name, p in body.items()}

    async def _watch(self) -> None:
        """Keep the records fresh: a restarted service registers its new pid."""
        assert self._client is not None
        while True:
            await asyncio.sleep(_WATCH_S)
            with contextlib.suppress(RedisError, OSError):
                found = await find_services(self._client, self.config.namespace)
                self.records.update(found)

    async def finish(self) -> None:
        # The pipeline keeps running: only what this run observed is recorded.
        await self._read_ledger()
        self.recording.streams = await self._streams()
        await self._drain_recorder()
        if self._sql is not None and self.config.postgres_url:
            self.recording.db = await snapshot(self.config.postgres_url, self.schema)
        if self._ledger is None:
            self.recording.ledger = None
            self.recording.ledger_source = ("not observable (execution's /venue/ledger never "
                                            "answered)")
            return
        self.recording.ledger = sorted(self._ledger.values(), key=lambda x: x.get("ts", 0))
        self.recording.ledger_source = ("paper venue, read from execution's /venue/ledger "
                                        "(attached: fills before the first read not judged)")

    async def _read_ledger(self) -> None:
        """As in distributed mode; what execution made before the attach (or before its
        last restart) is not in its ledger: that span is blind."""
        await super()._read_ledger()
        if self._first_read and self._ledger_read is not None:
            self._first_read = False
            self.recording.ledger_blind.insert(0, (0, self._ledger_read[1]))

    async def stop(self) -> None:
        """Stop observing; the user's services, Redis and PostgreSQL keep running (a
        service this run froze is continued)."""
        for task in (self._watcher, self._recorder):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._recording_on = False
        for service in list(self._frozen):
            with contextlib.suppress(Unavailable, ProcessLookupError, PermissionError):
                os.kill(self._pid(service), signal.SIGCONT)
        self._frozen.clear()
        await self._forget_groups()
        if self.bus is not None:
            await self.bus.close()
        if self._client is not None:
            await self._client.aclose()
        if self._sql is not None:
            await self._sql.close()
        await self._http.aclose()
        shutil.rmtree(self._secrets, ignore_errors=True)

    async def _forget_groups(self) -> None:
        """The user's Redis keeps nothing of this run: its group, and the streams it
        created that are still empty."""
        if self._client is None:
            return
        ns = Namespace(self.config.namespace)
        with contextlib.suppress(RedisError, OSError):
            for topic in [*ALL_STREAMS, *(s + DEAD_LETTER_SUFFIX for s in ALL_STREAMS)]:
                key = ns.key(topic)
                with contextlib.suppress(ResponseError):
                    await self._client.xgroup_destroy(key, RECORDER_GROUP)
                if key in self._made and not await self._client.xlen(key):
                    await self._client.delete(key)

    # -- observation -------------------------------------------------------------------

    def _url(self, service: str, path: str) -> str:
        record = self.records.get(service)
        if record is None:
            raise Unavailable(f"service {service!r} is not running in namespace "
                              f"{self.config.namespace!r}")
        parts = urlsplit(record.address)
        if parts.hostname in ("0.0.0.0", "::", ""):  # noqa: S104 - bound to all: reach it here
            return f"{parts.scheme or 'http'}://127.0.0.1:{parts.port}{path}"
        return f"{record.address.rstrip('/')}{path}"

    def _log_tail(self, service: str, chars: int = 1500) -> str:
        return "(attached: the service's log is where cdb up writes it)"

    async def sql(self, query: str) -> list[dict[str, Any]]:
        if self._sql is None:
            raise Unavailable("no PostgreSQL given (--postgres or DATABASE_URL): the "
                              "pipeline's database is not observed")
        return await self._sql.query(query)

    # -- controls ----------------------------------------------------------------------

    def service_pid(self, service: str) -> int | None:
        record = self.records.get(service)
        return record.pid if record is not None and record.pid else None

    def _pid(self, service: str) -> int:
        record = self.records.get(service)
        if record is None or not record.pid:
            raise Unavailable(f"service {service!r} is not registered in namespace "
                              f"{self.config.namespace!r}")
        if record.host and record.host != self.hostname:
            raise Unavailable(f"{service} runs on {record.host}, not on this host "
                              f"({self.hostname}): its process cannot be signalled")
        return record.pid

    async def signal_service(self, service: str, signame: str) -> str:
        if signame in ("SIGKILL", "SIGTERM"):
            pid = self._pid(service)
            if not supervised(pid):
                raise Unavailable(f"{service} (pid {pid}) has no supervisor that would "
                                  f"restart it ({RESTARTS_ENV} not in its environment): "
                                  f"not sent {signame}")
        return await super().signal_service(service, signame)

    async def wait_service_back(self, service: str, since_pid: int | None,
                                timeout: float) -> str:
        assert self._client is not None
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with contextlib.suppress(RedisError, OSError):
                self.records.update(await find_services(self._client, self.config.namespace))
            pid = self.service_pid(service)
            if pid is not None and pid != since_pid:
                with contextlib.suppress(httpx.HTTPError):
                    r = await self._http.get(self._url(service, "/health/ready"), timeout=1.0)
                    if r.status_code == 200:
                        return (f"{service} back as pid {pid} after "
                                f"{time.monotonic() - started:.2f}s")
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{service} not back within {timeout:g}s (still pid {since_pid})")

    async def ess_command(self, command: str, reason: str, actor: str) -> dict[str, Any]:
        if not self.token:
            raise Unavailable("no API token (CDB_API_TOKEN or CDB_API_TOKEN_FILE) to command "
                              "the running pipeline's ESS")
        try:
            return await super().ess_command(command, reason, actor)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (401, 403):
                raise Unavailable(f"the risk service refused the API token "
                                  f"({exc.response.status_code})") from exc
            raise

    def infra(self, name: str) -> Any:
        raise Unavailable(f"attach mode never takes the user's {name} down")

    def proxy_url(self) -> str:
        if not self.config.proxy_url:
            raise Unavailable("no fault proxy given (--proxy): attach mode can only cut or "
                              "slow links that go through a proxy the user placed in front "
                              "of Redis or PostgreSQL")
        return self._proxy_api

    def proxy_name(self, service: str, dependency: str) -> str:
        self.proxy_url()
        server = self.config.redis_url if dependency == "redis" else self.config.postgres_url
        if server is None:
            raise Unavailable(f"no {dependency} URL given: its proxy cannot be told apart")
        parts = urlsplit(server)
        default = 6379 if dependency == "redis" else 5432
        names = []
        for name, (_, upstream) in sorted(self._proxies.items()):
            host, _, port = upstream.rpartition(":")
            if port.isdigit() and int(port) == (parts.port or default) and _same_host(
                    host, parts.hostname or ""):
                names.append(name)
        if service != "*":
            names = [n for n in names if service in n]
        if not names:
            raise Unavailable(f"the proxy at {self._proxy_api} has no proxy in front of "
                              f"{dependency}" + ("" if service == "*" else f" for {service}"))
        return ",".join(names)
