"""The distributed target: the five ``cdb service`` processes over a throwaway Redis and
PostgreSQL, in a namespace of their own.

Each service runs under its own ``Supervisor`` (so each can have its own environment:
its API port, and its own proxied links when the scenario injects network faults),
restarted when it dies as in production. Redis (with an append-only file, so a
stopped Redis comes back with its streams) and PostgreSQL are started on free ports
and removed at the end. The coordinator reads every stream as a consumer group of its
own, connected to Redis directly, never through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

import httpx
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from cdb.bus.keys import ALL_STREAMS, DEAD_LETTER_SUFFIX, Namespace
from cdb.bus.redis_streams import RedisStreamsBus, RedisStreamsSubscription
from cdb.chaos.clock import WallClock
from cdb.chaos.proxy import ProxyServer
from cdb.chaos.registry import Unavailable
from cdb.chaos.targets.base import GROUPS_OF, Plan, Target, scenario_env
from cdb.chaos.targets.db import SqlReader, snapshot
from cdb.config import Settings
from cdb.errors import BusError
from cdb.events import AnyEvent
from cdb.runtime.http import HttpServer
from cdb.runtime.supervisor import STARTUP_ORDER, Supervisor, child_env
from cdb.testing.ports import free_port
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer

RECORDER_GROUP = "chaos.recorder"


class _Endpoint(msgspec.Struct, frozen=True):
    """Where a server is and how to log in."""

    host: str
    port: int
    password: str = ""
    db: str = "0"
    user: str = ""

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (PostgreSQL)."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql+asyncpg://{auth}@{self.host}:{self.port}/{self.db}"
_READY_TIMEOUT_S = 90.0
_DRAIN_TIMEOUT_S = 30.0
_USES_POSTGRES = ("risk", "db_writer")


class DistributedTarget(Target):
    """The pipeline as processes (see the module docstring)."""

    mode: ClassVar[str] = "distributed"

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.clock: WallClock = WallClock()
        self._t0_ns = time.time_ns()
        self.recording.t_of = lambda ts: (ts - self._t0_ns) / 1e9
        self.log_dir = plan.report_dir / "logs"
        self.redis: RedisServer | None = None
        self.postgres: PostgresServer | None = None
        self.proxy: ProxyServer | None = None
        self._proxy_http: HttpServer | None = None
        self._proxy_port = 0
        self.supervisors: dict[str, Supervisor] = {}
        self.ports = {name: free_port() for name in self.services}
        self.token = uuid.uuid4().hex
        self._secrets = Path(tempfile.mkdtemp(prefix="cdb-chaos-"))
        self._client: aioredis.Redis | None = None
        self.bus: RedisStreamsBus | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._recording_on = True
        self._sql: SqlReader | None = None
        self._http = httpx.AsyncClient(timeout=2.0)
        self.schema: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def _secret(self, name: str, value: str) -> str:
        path = self._secrets / name
        path.write_text(value)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        return str(path)

    async def _start_infra(self) -> None:
        """Throwaway Redis and PostgreSQL, or the ones given (shared, namespaced)."""
        plan = self.plan
        starting = []
        if plan.redis_url:
            url = urlsplit(plan.redis_url)
            self.redis_at = _Endpoint(url.hostname or "127.0.0.1", url.port or 6379,
                                      unquote(url.password or ""), url.path.strip("/") or "0")
        else:
            aof = plan.scenario.pipeline.redis_persistence == "aof"
            self.redis = RedisServer(password=uuid.uuid4().hex,
                                     args=("--appendonly", "yes") if aof else ())
            self.redis_at = _Endpoint(self.redis.host, self.redis.port, self.redis.password or "")
            starting.append(asyncio.to_thread(self.redis.start))
        if plan.postgres_url:
            url = urlsplit(plan.postgres_url)
            self.pg_at = _Endpoint(url.hostname or "127.0.0.1", url.port or 5432,
                                   unquote(url.password or ""), url.path.strip("/") or "cdb",
                                   unquote(url.username or "postgres"))
        else:
            self.postgres = PostgresServer(database="cdb")
            self.pg_at = _Endpoint(self.postgres.host, self.postgres.port, "", "cdb", "postgres")
            starting.append(asyncio.to_thread(self.postgres.start))
        await asyncio.gather(*starting)

    async def start(self) -> None:
        plan = self.plan
        self.log_dir.mkdir(parents=True, exist_ok=True)
        await self._start_infra()
        links = self._links()
        if links:
            await self._start_proxies(links)
        redis, pg = self.redis_at, self.pg_at
        base = {
            **scenario_env(plan.scenario, plan.seed), **plan.env,
            "SERVICE_INSTANCE_NAME": self.namespace, "REDIS_HOST": redis.host,
            "REDIS_DB": redis.db, "REDIS_PASSWORD_FILE": self._secret("redis_password",
                                                                     redis.password),
            "POSTGRES_HOST": pg.host, "POSTGRES_USER": pg.user, "POSTGRES_DB": pg.db,
            "POSTGRES_PASSWORD_FILE": self._secret("postgres_password", pg.password),
            "CDB_API_TOKEN_FILE": self._secret("cdb_api_token", self.token),
            "CDB_SECRETS_DIR": str(self._secrets), "ENVIRONMENT": "chaos",
            "WS_DURATION_S": str(plan.market_duration), "WS_SPEED": self._speed(),
            "CDB_CLAIM_IDLE_S": "2", "CDB_DRAIN_TIMEOUT_S": "5", "LOG_LEVEL": "INFO",
            "CDB_BUFFER_DIR": str(plan.report_dir / "buffers"),
            **{f"CDB_PORT_{s.upper()}": str(p) for s, p in self.ports.items()},
        }
        self.recording.env = dict(base)
        self.schema = Settings.model_validate(
            {"service_instance_name": self.namespace}).postgres_schema()
        self._sql = SqlReader(pg.url, self.schema)
        self._client = aioredis.Redis(host=redis.host, port=redis.port, db=int(redis.db),
                                      password=redis.password or None, socket_timeout=2.0,
                                      socket_connect_timeout=1.0)
        self.bus = RedisStreamsBus(self._client, Namespace(self.namespace))
        topics = [*ALL_STREAMS, *(s + DEAD_LETTER_SUFFIX for s in ALL_STREAMS)]
        sub = self.bus.subscribe(topics, RECORDER_GROUP, "recorder")
        await sub.ensure_groups()
        self._recorder = asyncio.create_task(self._record(sub), name="chaos.recorder")
        for service in STARTUP_ORDER:
            if service not in self.services:
                continue
            env = child_env({**base, **self._service_env(service, links)})
            sup = Supervisor(env, self.log_dir, services=(service,), drain_timeout=10.0,
                             max_backoff=2.0)
            await sup.start()
            self.supervisors[service] = sup
        await self._wait_ready()
        # t = 0 when the warm-up has passed; event times map to the same axis.
        self.clock.set_origin(time.monotonic() + plan.warmup)
        self._t0_ns = time.time_ns() + int(plan.warmup * 1e9)

    def _speed(self) -> str:
        speed = self.plan.scenario.pipeline.market.speed
        return "realtime" if speed is None or speed == 1.0 else str(speed)

    def _links(self) -> list[tuple[str, str]]:
        pipe = self.plan.scenario.pipeline
        if pipe.proxy == "never":
            return []
        deps = {d for _, d in self.plan.proxies}
        if pipe.proxy == "always":
            deps = {"redis", "postgres"}
        return [(s, d) for d in sorted(deps) for s in self.services
                if d == "redis" or s in _USES_POSTGRES]

    async def _start_proxies(self, links: list[tuple[str, str]]) -> None:
        self.proxy = ProxyServer(seed=self.plan.seed)
        self._proxy_port = free_port()
        self._proxy_http = HttpServer(self.proxy.app, "127.0.0.1", self._proxy_port)
        await self._proxy_http.start()
        upstream = {"redis": f"{self.redis_at.host}:{self.redis_at.port}",
                    "postgres": f"{self.pg_at.host}:{self.pg_at.port}"}
        for service, dep in links:
            await self.proxy.create(f"{service}-{dep}", "127.0.0.1:0", upstream[dep])

    def _service_env(self, service: str, links: list[tuple[str, str]]) -> dict[str, str]:
        env = {"CDB_CONSUMER": self.instance_of(service),
               "REDIS_PORT": str(self.redis_at.port), "POSTGRES_PORT": str(self.pg_at.port)}
        if self.proxy is not None:
            for s, dep in links:
                if s == service:
                    host, _, port = self.proxy.get(f"{s}-{dep}").listen.rpartition(":")
                    env[f"{dep.upper()}_HOST"] = host
                    env[f"{dep.upper()}_PORT"] = port
        return env

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        waiting = set(self.services)
        while waiting:
            for service in list(waiting):
                try:
                    r = await self._http.get(self._url(service, "/health/ready"))
                    if r.status_code == 200:
                        waiting.discard(service)
                except httpx.HTTPError:
                    pass
            if not waiting:
                return
            if time.monotonic() > deadline:
                logs = {s: self._log_tail(s) for s in waiting}
                raise RuntimeError(f"services not ready after {_READY_TIMEOUT_S:g}s: "
                                   f"{', '.join(sorted(waiting))}; logs: {logs}")
            await asyncio.sleep(0.2)

    def _log_tail(self, service: str, chars: int = 1500) -> str:
        path = self.log_dir / f"{service}.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def _url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    async def _record(self, sub: RedisStreamsSubscription) -> None:
        while self._recording_on:
            try:
                batches = await sub.read(10_000, 0.2)
                for batch in batches:
                    self.recording.on_events(batch.topic, batch.events)
                if batches:
                    await sub.ack(batches)
            except BusError:
                await asyncio.sleep(0.2)  # Redis down: read again once it is back

    async def finish(self) -> None:
        # The market ends when ws stops; what it published drains through the rest.
        if "ws" in self.supervisors:
            await self.supervisors["ws"].stop()
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                lag = await self.lag()
            except BusError:
                lag = {"?": {"?": 1}}
            if not any(n for groups in lag.values() for n in groups.values()):
                break
            await asyncio.sleep(0.25)
        # Drained (or given up on): the rest stop together, each draining what it holds.
        await asyncio.gather(*(self.supervisors[s].stop() for s in
                               ("signal", "risk", "execution", "db_writer")
                               if s in self.supervisors))
        self.recording.streams = await self._streams()
        await self._drain_recorder()
        self.recording.db = await snapshot(self.pg_at.url, self.schema)
        self.recording.ledger = None
        self.recording.ledger_source = "not observable (paper venue inside the execution process)"

    async def _drain_recorder(self) -> None:
        assert self.bus is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = sum([await self.bus.pending(t, RECORDER_GROUP) for t in ALL_STREAMS])
            if not pending:
                break
            await asyncio.sleep(0.1)
        self._recording_on = False
        if self._recorder is not None:
            await asyncio.wait([self._recorder], timeout=3)

    async def _streams(self) -> dict[str, Any]:
        out = {}
        for stream in ALL_STREAMS:
            with contextlib.suppress(RedisError):
                out[stream] = await self.stream_info(stream)
        return out

    async def stop(self) -> None:
        await self._stop_services()
        self._recording_on = False
        if self._recorder is not None and not self._recorder.done():
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recorder
        await self._clean_shared()
        if self.bus is not None:
            await self.bus.close()
        if self._client is not None:
            await self._client.aclose()
        if self._sql is not None:
            await self._sql.close()
        await self._http.aclose()
        if self._proxy_http is not None:
            await self._proxy_http.stop()
        if self.proxy is not None:
            await self.proxy.close()
        for server in (self.redis, self.postgres):
            if server is not None:
                await asyncio.to_thread(server.close)
        shutil.rmtree(self._secrets, ignore_errors=True)

    async def _stop_services(self) -> None:
        for service in ("ws", "signal", "risk", "execution", "db_writer"):
            sup = self.supervisors.get(service)
            if sup is None:
                continue
            # A paused (SIGSTOPped) service would never drain.
            pid = sup.pid(service)
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(Exception):
                await sup.stop()

    async def _clean_shared(self) -> None:
        """A shared Redis or PostgreSQL keeps nothing of this run."""
        if self._client is not None and self.plan.redis_url:
            await self._forget_keys()
        if self._sql is not None and self.plan.postgres_url and self.schema:
            with contextlib.suppress(Exception):
                await self._sql.query(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    async def _forget_keys(self) -> None:
        """A shared Redis keeps nothing of this run (its namespace's keys)."""
        assert self._client is not None
        with contextlib.suppress(RedisError):
            async for key in self._client.scan_iter(match=f"{self.namespace}:*", count=500):
                await self._client.delete(key)

    # -- observation -------------------------------------------------------------------

    async def health(self, service: str) -> dict[str, Any]:
        if service not in self.ports:
            raise Unavailable(f"service {service!r} is not running in this pipeline")
        try:
            r = await self._http.get(self._url(service, "/health"), timeout=1.0)
            body: dict[str, Any] = r.json()
            return body
        except (httpx.HTTPError, ValueError) as exc:
            return {"service": service, "status": "unreachable",
                    "error": f"{type(exc).__name__}: {exc}"}

    async def metrics_text(self, service: str) -> str:
        r = await self._http.get(self._url(service, "/metrics"), timeout=2.0)
        r.raise_for_status()
        return r.text

    async def sql(self, query: str) -> list[dict[str, Any]]:
        if self._sql is None:
            raise Unavailable("the database is not started")
        return await self._sql.query(query)

    async def lag(self) -> dict[str, dict[str, int]]:
        assert self.bus is not None
        out: dict[str, dict[str, int]] = {}
        for group, topics in GROUPS_OF.items():
            if group not in self.services:
                continue
            for topic in topics:
                out.setdefault(topic, {})[group] = await self.bus.pending(topic, group)
        return out

    async def stream_info(self, stream: str) -> dict[str, Any]:
        assert self._client is not None
        key = Namespace(self.namespace).key(stream)
        try:
            info = await self._client.xinfo_stream(key)
            groups = await self._client.xinfo_groups(key)
        except ResponseError:
            return {"stream": stream, "length": 0, "entries_added": 0, "groups": {},
                    "dead_lettered": 0}
        dead = await self._client.xlen(Namespace(self.namespace).dead_letter(stream))

        def text(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        return {
            "stream": stream, "length": int(info.get("length", 0)),
            "entries_added": int(info.get("entries-added", info.get("length", 0)) or 0),
            "dead_lettered": int(dead),
            "groups": {text(g["name"]): {"pending": int(g.get("pending", 0)),
                                         "lag": g.get("lag"),
                                         "entries_read": g.get("entries-read")}
                       for g in groups if text(g["name"]) != RECORDER_GROUP},
        }

    async def publish(self, topic: str, events: list[AnyEvent]) -> None:
        assert self.bus is not None
        await self.bus.publish(topic, events)

    def now_ns(self) -> int:
        return time.time_ns()

    # -- ESS over the risk API ---------------------------------------------------------

    async def ess(self) -> dict[str, Any]:
        if "risk" not in self.ports:
            raise Unavailable("no risk service in this pipeline")
        try:
            r = await self._http.get(self._url("risk", "/ess"), timeout=2.0)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"GET /ess: {exc!r}") from exc
        if r.status_code == 404:
            raise Unavailable("the risk service has no /ess API (issue 5)")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    async def ess_command(self, command: str, reason: str, actor: str) -> dict[str, Any]:
        r = await self._http.post(self._url("risk", f"/ess/{command}"),
                                  json={"actor": actor, "reason": reason},
                                  headers={"Authorization": f"Bearer {self.token}"},
                                  timeout=5.0)
        if r.status_code == 404:
            raise Unavailable("the risk service has no /ess API (issue 5)")
        body: dict[str, Any] = r.json()
        if r.status_code == 409:
            return {"changed": False, "refused": body.get("error"), **body}
        r.raise_for_status()
        return body

    # -- controls ----------------------------------------------------------------------

    def service_pid(self, service: str) -> int | None:
        sup = self.supervisors.get(service)
        return sup.pid(service) if sup else None

    def _pid(self, service: str) -> int:
        pid = self.service_pid(service)
        if pid is None:
            raise Unavailable(f"service {service!r} has no process")
        return pid

    async def pause_service(self, service: str) -> str:
        pid = self._pid(service)
        os.kill(pid, signal.SIGSTOP)
        return f"SIGSTOP to {service} (pid {pid})"

    async def resume_service(self, service: str) -> str:
        pid = self._pid(service)
        os.kill(pid, signal.SIGCONT)
        return f"SIGCONT to {service} (pid {pid})"

    async def signal_service(self, service: str, signame: str) -> str:
        pid = self._pid(service)
        os.kill(pid, getattr(signal, signame))
        return f"{signame} to {service} (pid {pid})"

    async def wait_service_back(self, service: str, since_pid: int | None,
                                timeout: float) -> str:
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            pid = self.service_pid(service)
            if pid is not None and pid != since_pid:
                try:
                    r = await self._http.get(self._url(service, "/health/ready"), timeout=1.0)
                    if r.status_code == 200:
                        return (f"{service} back as pid {pid} after "
                                f"{time.monotonic() - started:.2f}s")
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{service} not back within {timeout:g}s:\n{self._log_tail(service)}")

    def infra(self, name: str) -> Any:
        server = {"redis": self.redis, "postgres": self.postgres}.get(name)
        if server is None:
            raise Unavailable(f"{name} is shared ({name} URL given), not the run's own: it "
                              "is not taken down")
        return server

    def proxy_url(self) -> str:
        if self.proxy is None:
            raise Unavailable("no fault proxy in this run (no network fault was planned)")
        return f"http://127.0.0.1:{self._proxy_port}"

    def proxy_name(self, service: str, dependency: str) -> str:
        if self.proxy is None:
            raise Unavailable("no fault proxy in this run")
        names = [n for n in self.proxy.proxies if n.endswith(f"-{dependency}")
                 and (service == "*" or n == f"{service}-{dependency}")]
        if not names:
            raise Unavailable(f"no proxied link {service}->{dependency}")
        return ",".join(names)
