"""The distributed target: the five ``cdb service`` processes over a throwaway Redis and
PostgreSQL, in a namespace of their own.

The servers (``distributed_servers``), the service processes (``distributed_services``)
and what the coordinator reads of them (``distributed_reads``) are layers of one
target; this module starts, finishes and stops them, and sends the process signals.

The market is lined up with the timeline: ws is started once the consumers are ready,
with ``WS_START_NS`` a moment ahead, and t = 0 is that start plus the warm-up; the
market's shapes (``WS_SHAPES``) are placed in market seconds from that start, so a
flash crash planned at t = 5 s happens at t = 5 s on the coordinator's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import ClassVar

import httpx
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from cdb.bus.keys import ALL_STREAMS, DEAD_LETTER_SUFFIX, MARKET_DATA, Namespace
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.chaos.history.clock import WallScenarioClock
from cdb.chaos.targets.base import Plan, scenario_env
from cdb.chaos.targets.db import SqlReader, snapshot
from cdb.chaos.targets.distributed_reads import RECORDER_GROUP, ReadsTarget
from cdb.chaos.targets.exchange import FakeExchange
from cdb.config import Settings
from cdb.errors import BusError
from cdb.marketdata.synthetic import SyntheticSource
from cdb.runtime.supervisor import STARTUP_ORDER

__all__ = ["RECORDER_GROUP", "DistributedTarget"]

_DRAIN_TIMEOUT_S = 30.0
_UNREACHABLE_S = 5.0
"""Redis unreachable this long while draining: nothing more will drain; stop waiting."""
_MARKET_LEAD_S = 1.0
"""The market starts this long after ws is launched (about its start-up time): trades
of a slower start are caught up at once."""


class DistributedTarget(ReadsTarget):
    """The pipeline as processes (see the module docstring)."""

    mode: ClassVar[str] = "distributed"

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.clock: WallScenarioClock = WallScenarioClock()
        self._t0_ns = time.time_ns()
        self.recording.t_of = lambda ts: (ts - self._t0_ns) / 1e9
        self.market_start_ns = 0

    # -- lifecycle ---------------------------------------------------------------------

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

    async def stop(self) -> None:
        await self._stop_services()
        self._recording_on = False
        if self._recorder is not None and not self._recorder.done():
            self._recorder.cancel()
            # Its end (cancelled or failed) is collected; a cancellation of stop itself
            # still propagates.
            await asyncio.gather(self._recorder, return_exceptions=True)
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
        await self._close_servers()

    # -- controls ----------------------------------------------------------------------

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
