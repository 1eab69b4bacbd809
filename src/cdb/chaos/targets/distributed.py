"""The distributed target: the five ``cdb service`` processes over a throwaway Redis and
PostgreSQL, in a namespace of their own.

Each service runs under its own ``Supervisor`` (so each can have its own environment:
its API port, and its own proxied links when the scenario injects network faults),
restarted when it dies as in production, and killed with the coordinator should it
die without cleaning up. Redis (with an append-only file, so a stopped Redis comes
back with its streams) and PostgreSQL are started on free ports outside the OS's
ephemeral range (a server stopped by a fault must be able to listen on its port
again) and removed at the end. The coordinator reads every stream as a consumer group
of its own, connected to Redis directly, never through the proxy.

The market is lined up with the timeline: ws is started once the consumers are ready,
with ``WS_START_NS`` a moment ahead, and t = 0 is that start plus the warm-up; the
market's shapes (``WS_SHAPES``) are placed in market seconds from that start, so a
flash crash planned at t = 5 s happens at t = 5 s on the coordinator's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, unquote, urlsplit

import httpx
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError

from cdb.bus.keys import ALL_STREAMS, DEAD_LETTER_SUFFIX, MARKET_DATA, Namespace
from cdb.bus.redis_streams import RedisStreamsBus, RedisStreamsSubscription
from cdb.chaos.faults.exchange import FakeExchange
from cdb.chaos.proxy.server import ProxyServer
from cdb.chaos.run.clock import WallClock
from cdb.chaos.run.reaper import DONE
from cdb.chaos.scenario.registry import Unavailable
from cdb.chaos.targets.base import GROUPS_OF, Plan, Target, scenario_env
from cdb.chaos.targets.db import SqlReader, snapshot
from cdb.config import Settings
from cdb.errors import BusError
from cdb.events import AnyEvent
from cdb.marketdata.synthetic import SyntheticSource
from cdb.runtime.http import HttpServer
from cdb.runtime.supervisor import STARTUP_ORDER, Supervisor, child_env
from cdb.testing.ports import free_port, restartable_port
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer

RECORDER_GROUP = "chaos.recorder"
T = TypeVar("T")


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
_UNREACHABLE_S = 5.0
"""Redis unreachable this long while draining: nothing more will drain; stop waiting."""
_MARKET_LEAD_S = 1.0
"""The market starts this long after ws is launched (about its start-up time): trades
of a slower start are caught up at once."""
_PUBLISH_RETRY_S = 5.0
"""How long the coordinator retries one publish (Redis restarting under a fault)."""
_CALL_S = 3.0
"""Longest wait for one Redis call of the coordinator: a connection that hangs (a Redis
stopping or starting) fails instead of holding the run."""


async def _bounded(call: Awaitable[T], what: str) -> T:
    """``call``, or BusError after ``_CALL_S``."""
    try:
        async with asyncio.timeout(_CALL_S):
            return await call
    except TimeoutError:
        raise BusError(f"{what}: no answer from Redis within {_CALL_S:g}s") from None


_OPEN = 2**63 - 1
"""End of a blind span not closed yet (no trade handled since the restart)."""


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
        self._proxy_api = ""
        self._links_made: dict[tuple[str, str], tuple[str, str]] = {}
        """(service, dependency) -> (proxy name, its listen address)."""
        self.supervisors: dict[str, Supervisor] = {}
        # Restartable: a killed service comes back on the same port.
        self.ports = {name: restartable_port() for name in self.services}
        self.market_start_ns = 0
        self.token = uuid.uuid4().hex
        self._secrets = Path(tempfile.mkdtemp(prefix="cdb-chaos-"))
        self._reaper: subprocess.Popen[bytes] | None = None
        self._client: aioredis.Redis | None = None
        self.bus: RedisStreamsBus | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._recording_on = True
        self._sql: SqlReader | None = None
        self._http = httpx.AsyncClient(timeout=2.0)
        self.schema: str | None = None
        self.exchange: FakeExchange | None = None
        """The fake Binance execution trades on (``pipeline.venue: fake-binance``)."""
        self._ledger: dict[str, dict[str, Any]] | None = None
        """The paper venue's executions read from execution's API, by venue fill id,
        over every process execution ran as (None: never read)."""
        self._ledger_read: tuple[int, int] | None = None
        self._frozen: set[str] = set()
        """Services this run froze (SIGSTOP): nothing is asked of them until continued."""
        """(pid, wall ns) of the last read of the ledger."""
        self._ws_published: dict[str, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def _secret(self, name: str, value: str) -> str:
        path = self._secrets / name
        path.write_text(value)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        return str(path)

    def _reap(self, order: dict[str, Any] | str) -> None:
        """Tell the reaper what to clean up should this process die without doing it."""
        if self._reaper is None or self._reaper.stdin is None:
            return
        with contextlib.suppress(OSError):
            self._reaper.stdin.write((json.dumps(order) if isinstance(order, dict) else order)
                                     .encode() + b"\n")
            self._reaper.stdin.flush()

    def _start_reaper(self) -> None:
        # In a session of its own: whatever kills this process (or its group) spares it.
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "cdb.chaos.run.reaper"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._reap({"remove": str(self._secrets)})

    def _dismiss_reaper(self) -> None:
        if self._reaper is None:
            return
        self._reap(DONE)
        with contextlib.suppress(OSError):
            if self._reaper.stdin is not None:
                self._reaper.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._reaper.wait(timeout=5)
        self._reaper = None

    async def _start_infra(self) -> None:
        """Throwaway Redis and PostgreSQL, or the ones given (shared, namespaced)."""
        plan = self.plan
        self._start_reaper()
        starting = []
        if plan.redis_url:
            url = urlsplit(plan.redis_url)
            self.redis_at = _Endpoint(url.hostname or "127.0.0.1", url.port or 6379,
                                      unquote(url.password or ""), url.path.strip("/") or "0")
        else:
            aof = plan.scenario.pipeline.redis_persistence == "aof"
            self.redis = RedisServer(port=restartable_port(), password=uuid.uuid4().hex,
                                     args=("--appendonly", "yes") if aof else ())
            self.redis_at = _Endpoint(self.redis.host, self.redis.port, self.redis.password or "")
            starting.append(asyncio.to_thread(self.redis.start))
            self._reap({"redis": [self.redis.host, self.redis.port, self.redis.password]})
        if plan.postgres_url:
            url = urlsplit(plan.postgres_url)
            self.pg_at = _Endpoint(url.hostname or "127.0.0.1", url.port or 5432,
                                   unquote(url.password or ""), url.path.strip("/") or "cdb",
                                   unquote(url.username or "postgres"))
        else:
            self.postgres = PostgresServer(port=restartable_port(), database="cdb")
            self.pg_at = _Endpoint(self.postgres.host, self.postgres.port, "", "cdb", "postgres")
            starting.append(asyncio.to_thread(self.postgres.start))
        await asyncio.gather(*starting)
        if self.postgres is not None and self.postgres.directory is not None:
            self._reap({"postgres": str(self.postgres.directory),
                        "remove": str(self.postgres.directory)})

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
            "WS_TRADES_PER_S": str(plan.scenario.pipeline.market.trades_per_s),
            "WS_BURSTS_PER_HOUR": str(plan.scenario.pipeline.market.bursts_per_hour),
            "WS_SHAPES": msgspec.json.encode(plan.shapes).decode(),
            "CDB_CLAIM_IDLE_S": "2", "CDB_DRAIN_TIMEOUT_S": "5", "LOG_LEVEL": "INFO",
            "CDB_BUFFER_DIR": str(plan.report_dir / "buffers"),
            **{f"CDB_PORT_{s.upper()}": str(p) for s, p in self.ports.items()},
        }
        pipe = plan.scenario.pipeline
        fake_market = pipe.market.source == "fake-binance"
        if pipe.venue == "fake-binance" or fake_market:
            self.exchange = FakeExchange(pipe.market.symbols)
            base.update(await self.exchange.start(venue=pipe.venue == "fake-binance",
                                                  market=fake_market))
        self.schema = Settings.model_validate(
            {"service_instance_name": self.namespace}).postgres_schema()
        self._sql = SqlReader(pg.url, self.schema)
        # Few, short retries: redis-py's default (10, backing off to 10 s) makes every
        # call take seconds while Redis is down, and the end of a run makes dozens.
        self._client = aioredis.Redis(host=redis.host, port=redis.port, db=int(redis.db),
                                      password=redis.password or None, socket_timeout=2.0,
                                      socket_connect_timeout=1.0,
                                      retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2))
        self.bus = RedisStreamsBus(self._client, Namespace(self.namespace))
        topics = [*ALL_STREAMS, *(s + DEAD_LETTER_SUFFIX for s in ALL_STREAMS)]
        sub = self.bus.subscribe(topics, RECORDER_GROUP, "recorder")
        await sub.ensure_groups()
        self._recorder = asyncio.create_task(self._record(sub), name="chaos.recorder")
        # Consumers first; ws once they are ready, with its market starting a moment
        # later (catching up what its start-up took).
        for service in STARTUP_ORDER:
            if service in self.services and service != "ws":
                await self._launch(service, base)
        await self._wait_ready(set(self.services) - {"ws"})
        if fake_market and "ws" in self.services:
            # ws listens to the exchange first; the market prints once it is there.
            await self._launch("ws", base)
            await self._wait_ready({"ws"})
        self.market_start_ns = time.time_ns() + int(_MARKET_LEAD_S * 1e9)
        base["WS_START_NS"] = str(self.market_start_ns)
        self.recording.env = dict(base)
        # t = 0 when the warm-up has passed; event times map to the same axis.
        self._t0_ns = self.market_start_ns + int(plan.warmup * 1e9)
        self.clock.set_origin(time.monotonic() + (self._t0_ns - time.time_ns()) / 1e9)
        if "ws" in self.services and not fake_market:
            await self._launch("ws", base)
            await self._wait_ready({"ws"})
        if fake_market and self.exchange is not None:
            # The same seeded market ws would generate, printed on the exchange on time.
            self.exchange.feed(SyntheticSource(
                seed=plan.seed, symbols=pipe.market.symbols, duration_s=plan.market_duration,
                source="fake-binance", start_ns=self.market_start_ns, batch_size=1,
                shapes=tuple(plan.shapes), trades_per_s=pipe.market.trades_per_s,
                bursts_per_hour=pipe.market.bursts_per_hour).batches(), self.market_start_ns)

    async def _launch(self, service: str, base: dict[str, str]) -> None:
        env = child_env({**base, **self._service_env(service)})
        # SIGKILL, not SIGTERM, when the coordinator dies: a service the scenario
        # paused (SIGSTOP) would never act on a SIGTERM.
        sup = Supervisor(env, self.log_dir, services=(service,), drain_timeout=10.0,
                         max_backoff=2.0, parent_death_signal=signal.SIGKILL)
        await sup.start()
        self.supervisors[service] = sup

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
        """One proxy per link, made through the Toxiproxy HTTP API: of a real Toxiproxy
        (``--toxiproxy URL``), else of cdb's own proxy started here."""
        if self.plan.toxiproxy_url:
            self._proxy_api = self.plan.toxiproxy_url.rstrip("/")
        else:
            self.proxy = ProxyServer(seed=self.plan.seed)
            self._proxy_http = HttpServer(self.proxy.app, "127.0.0.1", 0)
            await self._proxy_http.start()
            self._proxy_api = f"http://127.0.0.1:{self._proxy_http.port}"
        upstream = {"redis": f"{self.redis_at.host}:{self.redis_at.port}",
                    "postgres": f"{self.pg_at.host}:{self.pg_at.port}"}
        for service, dep in links:
            # Named by the run's namespace: a shared Toxiproxy serves several runs.
            name = f"{self.namespace}-{service}-{dep}"
            body = {"name": name, "listen": f"127.0.0.1:{free_port()}",
                    "upstream": upstream[dep], "enabled": True}
            r = await self._http.post(f"{self._proxy_api}/proxies", json=body, timeout=5.0)
            if r.status_code >= 400:
                raise Unavailable(f"the proxy at {self._proxy_api} refused {name}: "
                                  f"{r.status_code} {r.text}")
            self._links_made[(service, dep)] = (name, str(r.json()["listen"]))

    async def _remove_proxies(self) -> None:
        for name, _ in self._links_made.values():
            with contextlib.suppress(httpx.HTTPError):
                await self._http.delete(f"{self._proxy_api}/proxies/{name}", timeout=2.0)
        self._links_made.clear()

    def _service_env(self, service: str) -> dict[str, str]:
        env = {"CDB_CONSUMER": self.instance_of(service),
               "REDIS_PORT": str(self.redis_at.port), "POSTGRES_PORT": str(self.pg_at.port)}
        for (s, dep), (_, listen) in self._links_made.items():
            if s == service:
                host, _, port = listen.rpartition(":")
                env[f"{dep.upper()}_HOST"] = host
                env[f"{dep.upper()}_PORT"] = port
        return env

    async def _wait_ready(self, services: set[str]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        waiting = set(services)
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

    async def observe(self) -> None:
        await self._read_ledger()

    async def _read_ledger(self) -> None:
        """Merge execution's ``/venue/ledger`` into the run's ledger. A restarted
        execution starts an empty one: what the dead process made after its last read
        is missing. That span is kept in event time (``ledger_blind``): from the newest
        trade the dead process had handled at its last read to the newest the new one
        had handled at its first (a fill's time is its trade's, and execution may run
        behind the market, so wall-clock read times would not bound it)."""
        if self.exchange is not None or "execution" not in self.ports:
            return
        pid = self.service_pid("execution")
        try:
            # The horizon first: the ledger read after it holds every fill up to it.
            health = await self._http.get(self._url("execution", "/health"), timeout=2.0)
            horizon = int((health.json().get("details") or {}).get("last_trade_ts") or 0)
            r = await self._http.get(self._url("execution", "/venue/ledger"), timeout=2.0)
        except (httpx.HTTPError, ValueError, TypeError):
            return
        if r.status_code != 200:
            return
        rows: list[dict[str, Any]] = r.json()
        if self._ledger is None:
            self._ledger = {}
        blind = self.recording.ledger_blind
        if self._ledger_read is not None and pid is not None and self._ledger_read[0] != pid:
            # Open until the new process has handled a trade (its horizon then).
            blind.append((self._ledger_read[1], _OPEN))
        if blind and blind[-1][1] == _OPEN and horizon:
            blind[-1] = (blind[-1][0], max(blind[-1][0], horizon))
        for row in rows:
            self._ledger[row["venue_fill_id"]] = row
        if pid is not None:
            self._ledger_read = (pid, horizon)

    async def _read_ws_count(self) -> None:
        """What ws says it published, just before it is stopped: the stream must hold
        at least that many entries afterwards (a lost tail is found)."""
        try:
            r = await self._http.get(self._url("ws", "/health"), timeout=2.0)
            details = r.json().get("details") or {}
            self._ws_published = {"service": "ws", "published": int(details["trades"])}
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            self._ws_published = None

    async def finish(self) -> None:
        # The market ends when ws stops; what it published drains through the rest.
        if "ws" in self.supervisors:
            await self._read_ws_count()
            await self.supervisors["ws"].stop()
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        reachable = time.monotonic()
        while time.monotonic() < deadline:
            try:
                lag = await self.lag()
                reachable = time.monotonic()
            except (BusError, RedisError):
                if time.monotonic() - reachable > _UNREACHABLE_S:
                    break  # Redis is gone: nothing more will drain
                lag = {"?": {"?": 1}}
            if not any(n for groups in lag.values() for n in groups.values()):
                break
            await asyncio.sleep(0.25)
        # The last read of the ledger, while execution still runs.
        await self._read_ledger()
        # Drained (or given up on): the rest stop together, each draining what it holds.
        await asyncio.gather(*(self.supervisors[s].stop() for s in
                               ("signal", "risk", "execution", "db_writer")
                               if s in self.supervisors))
        self.recording.streams = await self._streams()
        market = (self.recording.streams or {}).get(MARKET_DATA)
        if market is not None and self._ws_published is not None:
            market["producer"] = self._ws_published
        await self._drain_recorder()
        self.recording.db = await snapshot(self.pg_at.url, self.schema)
        if self.exchange is not None:
            self.recording.ledger = self.exchange.ledger()
            self.recording.ledger_source = "fake Binance (its own ledger)"
            return
        if self._ledger is None:
            self.recording.ledger = None
            self.recording.ledger_source = ("not observable (execution's /venue/ledger never "
                                            "answered)")
            return
        self.recording.ledger = sorted(self._ledger.values(), key=lambda x: x.get("ts", 0))
        self.recording.ledger_source = "paper venue, read from execution's /venue/ledger"

    async def _drain_recorder(self) -> None:
        assert self.bus is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pending = sum([await _bounded(self.bus.pending(t, RECORDER_GROUP), "pending")
                               for t in ALL_STREAMS])
            except (BusError, RedisError):
                break  # Redis is gone: the recorder has what it could get
            if not pending:
                break
            await asyncio.sleep(0.1)
        self._recording_on = False
        if self._recorder is not None:
            await asyncio.wait([self._recorder], timeout=3)

    async def _streams(self) -> dict[str, Any]:
        out = {}
        for stream in ALL_STREAMS:
            try:
                out[stream] = await _bounded(self.stream_info(stream), f"info of {stream}")
            except (BusError, RedisError):
                break  # Redis is gone: each further call would only wait to fail
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
        await self._remove_proxies()
        await self._http.aclose()
        if self.exchange is not None:
            await self.exchange.stop()
        if self._proxy_http is not None:
            await self._proxy_http.stop()
        if self.proxy is not None:
            await self.proxy.close()
        for server in (self.redis, self.postgres):
            if server is not None:
                await asyncio.to_thread(server.close)
        shutil.rmtree(self._secrets, ignore_errors=True)
        await asyncio.to_thread(self._dismiss_reaper)

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
                out.setdefault(topic, {})[group] = await _bounded(
                    self.bus.pending(topic, group), f"pending of {group} on {topic}")
        return out

    async def redis_memory(self) -> int | None:
        if self._client is None:
            return None
        try:
            info = await self._client.info("memory")
        except (RedisError, OSError):
            return None
        return int(info.get("used_memory", 0))

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
        """Publish as a producer would, retrying for a few seconds while Redis comes back
        (a repeated event is absorbed: consumers are idempotent on event ids)."""
        assert self.bus is not None
        deadline = time.monotonic() + _PUBLISH_RETRY_S
        while True:
            try:
                await _bounded(self.bus.publish(topic, events), f"publish to {topic}")
                return
            except BusError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

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

    async def _last_read(self, service: str) -> None:
        """Read execution's ledger once more just before it is frozen or killed: what
        it makes after that read is lost with it, so the blind span stays as short as
        the gap between this read and the signal."""
        if service == "execution" and service not in self._frozen:
            with contextlib.suppress(httpx.HTTPError, ValueError, TypeError):
                await self._read_ledger()

    async def pause_service(self, service: str) -> str:
        pid = self._pid(service)
        await self._last_read(service)
        os.kill(pid, signal.SIGSTOP)
        self._frozen.add(service)
        return f"SIGSTOP to {service} (pid {pid})"

    async def resume_service(self, service: str) -> str:
        pid = self._pid(service)
        os.kill(pid, signal.SIGCONT)
        self._frozen.discard(service)
        return f"SIGCONT to {service} (pid {pid})"

    async def signal_service(self, service: str, signame: str) -> str:
        pid = self._pid(service)
        if signame != "SIGCONT":
            await self._last_read(service)
        os.kill(pid, getattr(signal, signame))
        self._frozen.discard(service)  # continued, or gone
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

    def exchange_url(self) -> str:
        if self.exchange is None:
            return super().exchange_url()
        return self.exchange.url

    def proxy_url(self) -> str:
        if not self._links_made:
            raise Unavailable("no fault proxy in this run (no network fault was planned)")
        return self._proxy_api

    def proxy_name(self, service: str, dependency: str) -> str:
        if not self._links_made:
            raise Unavailable("no fault proxy in this run")
        names = [name for (s, dep), (name, _) in self._links_made.items()
                 if dep == dependency and service in ("*", s)]
        if not names:
            raise Unavailable(f"no proxied link {service}->{dependency}")
        return ",".join(names)
