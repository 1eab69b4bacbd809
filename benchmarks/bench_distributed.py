"""Distributed pipeline speed: five service processes over Redis Streams and PostgreSQL.

Measures, in one run on one machine, each against its own throwaway redis-server and
PostgreSQL (``cdb.testing``; never the shared ones):

1. throughput: ``cdb up`` (the real five processes) on a Binance-format replay file at
   ``WS_SPEED=max``; trades / time from the first trade in ``stream.market_data`` to
   the moment every consumer group of every stream has acknowledged everything (the
   db_writer acknowledges after its commit). Checked: signal consumed every trade,
   PostgreSQL holds every signal, order and fill published;
2. the naive baseline (``naive_pipeline.py``: one XADD per event, one XREADGROUP
   COUNT 1 + XACK per event) interleaved with (1), so the ratio holds on a shared host;
3. ``redis-benchmark`` XADD figures on the same kind of server: the bus's own limit;
4. tick-to-order latency at ~1,000 trades/s: a live feed (``--child-feed``: cdb's
   WsService, bus and LagPacer; trades stamped with the wall clock when ws takes them
   in and published as they come due) into the real signal, risk, execution and
   db_writer processes, signals made frequent; p50/p99 of ``cdb_tick_to_order_seconds``
   from risk's /metrics, the warm-up excluded;
5. RSS (VmRSS) of each service process, sampled through the runs.

Usage::

    .venv/bin/python benchmarks/bench_distributed.py [--trades 1000000] [--repeat 3]
        [--naive-trades 50000] [--latency-s 60] [--rate 1000] [--json FILE]

The host load (load average, CPU pressure) is printed with every figure: on a shared
machine a run is only as good as the CPU it got, hence best-of and interleaving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import naive_pipeline

DATA = Path(__file__).parent / ".data"
SERVICES = ("ws", "signal", "risk", "execution", "db_writer")
TICK = os.sysconf("SC_CLK_TCK")


# -- helpers ------------------------------------------------------------------------


def make_file(trades: int) -> Path:
    """A Binance ``trades`` CSV of ``trades`` synthetic BTCUSDT trades (cached)."""
    from cdb.marketdata.synthetic import SyntheticSource
    from cdb.testing.marketfiles import write_trades_csv

    path = DATA / f"BTCUSDT-trades-{trades}.csv"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        source = SyntheticSource(seed=1, symbols=["BTCUSDT"], duration_s=trades / 40)
        stream = itertools.islice((t for b in source.batches() for t in b), trades)
        write_trades_csv(path, stream, layout="trades")
    return path


def host_load() -> dict[str, float]:
    """Load average (1 min) and CPU pressure (share of time some task waited for a CPU,
    over the last 10 s)."""
    out = {"loadavg": float(Path("/proc/loadavg").read_text().split()[0])}
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        out["cpu_pressure_pct"] = float(re.search(r"avg10=([\d.]+)", some).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def postmaster(server: Any) -> int:
    """Pid of a ``PostgresServer``'s postmaster (its backends are its children)."""
    return int((server.directory / "data" / "postmaster.pid").read_text().split()[0])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class FirstEntry(threading.Thread):
    """Records the time (ms, Redis clock = host clock) of the first entry of a stream."""

    def __init__(self, client: Any, key: str) -> None:
        super().__init__(daemon=True)
        self.client, self.key = client, key
        self.first_ms: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.first_ms is None:
            first = self.client.xrange(self.key, "-", "+", count=1)
            if first:
                self.first_ms = int(first[0][0].split(b"-")[0])
            else:
                time.sleep(0.002)


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of ``name`` in a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            labels = dict(re.findall(r'(\w+)="([^"]*)"', head))
            out.append((labels, float(value)))
    return out


def histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """Cumulative buckets (upper bound, count), sum and count of histogram ``name``."""
    buckets = [
        (float("inf") if labels["le"] == "+Inf" else float(labels["le"]), value)
        for labels, value in metric_samples(text, name + "_bucket")
    ]
    total = sum(v for _, v in metric_samples(text, name + "_sum"))
    count = sum(v for _, v in metric_samples(text, name + "_count"))
    return sorted(buckets), total, count


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """``histogram_quantile``: linear interpolation inside the bucket holding rank q."""
    total = buckets[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            width = count - lower_count
            share = (rank - lower_count) / width if width else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return buckets[-1][0]


def _published(client: Any, key: str) -> int:
    """Entries ever added to stream ``key`` (Redis 7 counts them past trimming)."""
    try:
        return int(client.xinfo_stream(key)["entries-added"])
    except Exception:
        return 0


def _progress(client: Any, keys: list[str]) -> tuple[int, int]:
    """Trades added to the first stream and the backlog of every group of every stream
    (entries delivered but not acknowledged plus entries not yet delivered)."""
    pipe = client.pipeline(transaction=False)
    pipe.xinfo_stream(keys[0])
    for key in keys:
        pipe.xinfo_groups(key)
    replies = pipe.execute(raise_on_error=False)
    info, groups = replies[0], replies[1:]
    added = 0 if isinstance(info, Exception) else int(info["entries-added"])
    backlog = 0
    for reply in groups:
        if isinstance(reply, Exception):
            continue  # stream not created yet: nothing published on it
        for group in reply:
            backlog += int(group["pending"]) + int(group.get("lag") or 0)
    return added, backlog


def _db_counts(dsn: str, schema: str) -> dict[str, int]:
    import asyncpg

    async def go() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            out = {}
            for table in ("signals", "orders", "fills", "risk_decisions"):
                query = f'SELECT count(*) FROM "{schema}"."{table}"'  # noqa: S608 - our names
                out[table] = int(await conn.fetchval(query))
            return out
        finally:
            await conn.close()

    return asyncio.run(go())


class Sampler:
    """Samples RSS and CPU of a pipeline's processes."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.rss: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._cpu0: dict[str, float] = {}
        self._t0 = 0.0
        self.cpu_seconds: dict[str, float] = {}

    def sample_rss(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):  # a process that just exited
                self.rss[name] = max(self.rss[name], rss_mb(pid))

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            try:
                if name == "postgres":
                    out[name] = sum(cpu_seconds(c) for c in children_of(pid))
                else:
                    out[name] = cpu_seconds(pid)
            except OSError:
                out[name] = 0.0
        return out

    def start_cpu(self) -> None:
        self._cpu0, self._t0 = self._cpu(), time.monotonic()

    def cpu_pct(self) -> dict[str, float]:
        """CPU use of each process since ``start_cpu`` (% of one core)."""
        now, dt = self._cpu(), time.monotonic() - self._t0
        self.cpu_seconds = {n: now[n] - self._cpu0.get(n, 0.0) for n in now}
        return {n: round(100 * v / dt, 1) for n, v in self.cpu_seconds.items()}


# -- 1. throughput ------------------------------------------------------------------


def throughput(path: Path, trades: int, extra_env: dict[str, str]) -> dict[str, Any]:
    """One ``cdb up`` run over ``path``: rate, check counts, RSS and CPU per process."""
    import httpx

    from cdb.bus.keys import ALL_STREAMS, MARKET_DATA, Namespace
    from cdb.testing.cluster import LocalPipeline

    env = {
        "WS_SOURCE": "replay", "WS_REPLAY": str(path), "WS_SPEED": "max",
        "WS_SYMBOLS": "BTCUSDT", "LOG_LEVEL": "WARNING", **extra_env,
    }
    with tempfile.TemporaryDirectory(prefix="cdb-bench-") as tmp:
        env["CDB_BUFFER_DIR"] = tmp
        with LocalPipeline(Path(tmp), env) as p:
            client = p.redis_client()
            watch = FirstEntry(client, Namespace(p.namespace).key(MARKET_DATA))
            watch.start()
            load0 = host_load()
            p.start()
            pids = {n: int(p.details(n)["pid"]) for n in SERVICES}
            pids["redis"] = p.redis._proc.pid  # type: ignore[union-attr]
            pids["postgres"] = postmaster(p.postgres)
            sampler = Sampler(pids)
            sampler.start_cpu()
            # Progress from Redis alone (one pipelined look every 20 ms): polling a
            # service's HTTP API that often would cost it CPU that the run measures.
            keys = [Namespace(p.namespace).key(s) for s in ALL_STREAMS]
            trades_at_cpu0 = _published(client, keys[0])
            progress: list[tuple[float, int]] = []
            deadline = time.monotonic() + 60 + trades / 1000
            last_rss = 0.0
            while True:
                added, backlog = _progress(client, keys)
                now = time.time()
                progress.append((now, added))
                if now - last_rss > 0.5:
                    sampler.sample_rss()
                    last_rss = now
                if added >= trades and backlog == 0:
                    end = time.time()
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pipeline not drained: {p.logs()}")
                time.sleep(0.02)
            cpu = sampler.cpu_pct()
            load1 = host_load()
            sampler.sample_rss()
            watch.stop.set()
            watch.join()
            assert watch.first_ms is not None
            seconds = end - watch.first_ms / 1000
            metrics = httpx.get(p.url("signal", "/metrics")).text
            consumed = sum(v for labels, v in metric_samples(metrics, "cdb_events_consumed_total")
                           if labels.get("topic", "").endswith(MARKET_DATA))
            published = {}
            for service, topic in (("signal", "stream.signals"), ("risk", "stream.orders"),
                                   ("execution", "stream.fills")):
                text = httpx.get(p.url(service, "/metrics")).text
                published[topic] = int(sum(
                    v for labels, v in metric_samples(text, "cdb_events_published_total")
                    if labels.get("topic", "").endswith(topic)))
            db = _db_counts(p.postgres_url, p.schema)
            hwm = {n: round(rss_mb(pid, "VmHWM"), 1) for n, pid in pids.items()
                   if n in SERVICES}
            client.close()
    # Steady state: between 20 % and 80 % of the trades published.
    lo = next(x for x in progress if x[1] >= 0.2 * trades)
    hi = next(x for x in progress if x[1] >= 0.8 * trades)
    steady = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else float("nan")
    sampled = trades - trades_at_cpu0
    cpu_us = {n: round(1e6 * v / sampled, 2) for n, v in sampler.cpu_seconds.items()}
    ok = (int(consumed) == trades and db["signals"] == published["stream.signals"]
          and db["orders"] == published["stream.orders"]
          and db["fills"] == published["stream.fills"])
    return {
        "trades": trades, "seconds": round(seconds, 3), "rate": trades / seconds,
        "steady_rate": steady, "signal_consumed": int(consumed), "published": published,
        "db": db, "checked": ok, "cpu_pct": cpu, "cpu_us_per_trade": cpu_us,
        "cpu_us_per_trade_total": round(sum(cpu_us.values()), 1),
        "rss_mb": {k: round(v, 1) for k, v in sampler.rss.items()},
        "hwm_mb": hwm, "load_before": load0, "load_after": load1,
    }


def naive(path: Path, trades: int) -> dict[str, Any]:
    """One naive run on its own Redis and PostgreSQL (started the same way)."""
    from cdb.testing.postgres import PostgresServer
    from cdb.testing.redis import RedisServer

    with RedisServer() as redis_server, PostgresServer() as pg:
        dsn = pg.url.replace("postgresql+asyncpg://", "postgresql://")
        load0 = host_load()
        result = naive_pipeline.run(redis_server.url, dsn, str(path), trades)
        result.update(load_before=load0, load_after=host_load())
        return result


# -- 3. redis-benchmark -------------------------------------------------------------


def redis_benchmark(n: int) -> list[dict[str, Any]]:
    """XADD requests/s from ``redis-benchmark`` against a fresh server (as the runs')."""
    from cdb.testing.redis import RedisServer

    value = "v" * 224  # the size of one msgpack Trade
    cases = [
        ("-c", "50", "-P", "1", "XADD", "s", "*", "f", "v"),
        ("-c", "50", "-P", "100", "XADD", "s", "*", "f", "v"),
        ("-c", "1", "-P", "1", "XADD", "s", "*", "f", "v"),
        ("-c", "50", "-P", "1", "XADD", "s", "MAXLEN", "~", "10000", "*", "e", value),
        ("-c", "50", "-P", "100", "XADD", "s", "MAXLEN", "~", "10000", "*", "e", value),
    ]
    out = []
    with RedisServer() as server:
        for case in cases:
            args = ["redis-benchmark", "-p", str(server.port), "-n", str(n), *case[:4]]
            command = list(case[4:])
            best = 0.0
            for _ in range(2):
                subprocess.run(["redis-cli", "-p", str(server.port), "DEL", "s"],
                               capture_output=True, check=True)
                text = subprocess.run([*args, "--csv", *command], capture_output=True,
                                      text=True, check=True).stdout
                row = text.strip().splitlines()[-1].split(",")
                best = max(best, float(row[1].strip('"')))
            shown = " ".join(a if len(a) < 40 else f"<{len(a)}-byte value>"
                             for a in [*args, *command])
            shown = shown.replace(f"-p {server.port}", "-p PORT")
            out.append({"command": shown, "rps": best})
    return out


def calibrate(n: int = 2000) -> dict[str, float]:
    """What one Redis round trip costs on this host now (best of 3): raw asyncio and
    redis-py asyncio PING, wall and client CPU per round trip (us). On a busy shared
    host these swing by 5x; they put the other figures in context."""
    import redis.asyncio as aioredis

    from cdb.testing.redis import RedisServer

    async def run(port: int) -> dict[str, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = aioredis.Redis(host="127.0.0.1", port=port)
        await client.ping()
        best: dict[str, float] = {}
        for _ in range(3):
            for name in ("raw", "redis-py"):
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(n):
                    if name == "raw":
                        writer.write(b"*1\r\n$4\r\nPING\r\n")
                        await reader.readuntil(b"\r\n")
                    else:
                        await client.ping()
                for key, value in ((f"{name}_wall_us", time.perf_counter() - wall),
                                   (f"{name}_cpu_us", time.process_time() - cpu)):
                    best[key] = min(best.get(key, float("inf")), round(1e6 * value / n, 1))
        writer.close()
        await client.aclose()
        return best

    with RedisServer() as server:
        return {**asyncio.run(run(server.port)), **host_load()}


# -- 4. latency ---------------------------------------------------------------------


LATENCY_ENV = {
    # Frequent signals and no limit in the way: every signal a BUY/SELL becomes an order
    # unless nothing is held to sell.
    "SIGNAL_THRESHOLD_PCT": "0.01", "SIGNAL_MIN_VOLUME": "0",
    "RISK_MAX_ORDERS_PER_WINDOW": "1000000", "RISK_MAX_OPEN_ORDERS": "1000000",
    "RISK_MAX_POSITION": "1000000000", "RISK_MAX_EXPOSURE": "1000000000",
    "RISK_INITIAL_CASH": "1000000000", "ESS_DRAWDOWN_LIMIT_PCT": "100",
    "ESS_ERROR_BURST_COUNT": "1000000",
    # The service ws is left idle (a market of one millisecond): the live feed is
    # --child-feed, cdb's WsService over a source that releases trades as they come due.
    "WS_SOURCE": "synthetic", "WS_DURATION_S": "0.001", "WS_SPEED": "realtime",
    "LOG_LEVEL": "WARNING",
}


async def hop_times(p: Any) -> dict[str, dict[str, float]]:
    """Where tick-to-order goes, from the Redis entry ids (ms, host clock) of the last
    orders' signals: trade arrival (``ts``) to its signal in Redis, signal to order."""
    from cdb.bus.keys import ORDERS, SIGNALS, Namespace
    from cdb.events import decode

    ns = Namespace(p.namespace)
    client = p.redis.client()
    try:
        signals = {}
        for entry_id, fields in await client.xrange(ns.key(SIGNALS), count=20_000):
            signals[decode(fields[b"e"]).id] = int(entry_id.split(b"-")[0])
        first, second = [], []
        for entry_id, fields in await client.xrange(ns.key(ORDERS), count=20_000):
            order = decode(fields[b"e"])
            at = signals.get(order.causation_id)
            if at is not None:
                first.append(at - order.ts / 1e6)
                second.append(int(entry_id.split(b"-")[0]) - at)
    finally:
        await client.aclose()

    def summary(values: list[float]) -> dict[str, float]:
        values.sort()
        if not values:
            return {}
        return {q: round(values[min(len(values) - 1, int(f * len(values)))], 2)
                for q, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}

    return {"trade_to_signal": summary(first), "signal_to_order": summary(second)}


def latency(rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    """Tick-to-order at ``rate`` trades/s for ``seconds`` after ``warmup``."""
    import httpx

    from cdb.testing.cluster import REDIS_PASSWORD, LocalPipeline

    with tempfile.TemporaryDirectory(prefix="cdb-bench-") as tmp:
        env = {**LATENCY_ENV, "CDB_BUFFER_DIR": tmp}
        with LocalPipeline(Path(tmp), env) as p:
            p.start()
            feed_env = {
                **p.env, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(p.redis.port),
                "REDIS_PASSWORD": REDIS_PASSWORD, "CDB_BUFFER_DIR": tmp,
            }
            feed = subprocess.Popen(
                [sys.executable, __file__, "--child-feed", str(rate), str(warmup + seconds + 2)],
                env=feed_env, stdout=subprocess.PIPE, stderr=(Path(tmp) / "feed.log").open("w"),
                text=True,
            )
            pids = {n: int(p.details(n)["pid"]) for n in SERVICES}
            pids["feed"] = feed.pid
            pids["redis"] = p.redis._proc.pid  # type: ignore[union-attr]
            pids["postgres"] = postmaster(p.postgres)
            sampler = Sampler(pids)
            name = "cdb_tick_to_order_seconds"
            time.sleep(warmup)
            before = histogram(httpx.get(p.url("risk", "/metrics")).text, name)
            orders0 = int(p.details("risk")["orders"])
            load0 = host_load()
            sampler.start_cpu()
            rss0 = {n: rss_mb(pid) for n, pid in pids.items() if n in SERVICES}
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                sampler.sample_rss()
                time.sleep(0.5)
            growth = {n: round((rss_mb(pids[n]) - v) / (seconds / 60), 2)
                      for n, v in rss0.items()}
            after = histogram(httpx.get(p.url("risk", "/metrics")).text, name)
            cpu = sampler.cpu_pct()
            load1 = host_load()
            orders1 = int(p.details("risk")["orders"])
            hops = asyncio.run(hop_times(p))
            try:
                fed = json.loads(feed.communicate(timeout=60)[0].strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, IndexError):
                feed.kill()
                raise RuntimeError("the live feed failed: "
                                   + (Path(tmp) / "feed.log").read_text()[-3000:]
                                   + p.logs()) from None
    start = dict(before[0])
    buckets = [(b, c - start.get(b, 0.0)) for b, c in after[0]]
    count = after[2] - before[2]
    return {
        "rate_target": rate, "trades_per_s": fed["rate"], "orders": orders1 - orders0,
        "samples": int(count), "mean_ms": 1000 * (after[1] - before[1]) / count if count else None,
        "p50_ms": 1000 * quantile(0.5, buckets), "p90_ms": 1000 * quantile(0.9, buckets),
        "p99_ms": 1000 * quantile(0.99, buckets),
        "buckets": [(b, int(c)) for b, c in buckets],
        "hops_ms": hops,
        "cpu_pct": cpu, "rss_mb": {k: round(v, 1) for k, v in sampler.rss.items()},
        "rss_growth_mb_per_min": growth, "load_before": load0, "load_after": load1,
    }


def child_feed(rate: float, seconds: float) -> None:
    """The live market of the latency run: cdb's ws service (WsService, buffered Redis
    bus, LagPacer) over a synthetic market of ``rate`` trades/s released in real time,
    as a live (async) source such as the Binance websocket feed is.

    A trade is stamped with the wall clock (its ``ts``, what tick-to-order counts from)
    when it comes due, i.e. on arrival, and published at once.
    """
    import msgspec

    from cdb.bus.redis import make_bus, make_redis
    from cdb.clock import WallClock
    from cdb.config import load_settings
    from cdb.marketdata.synthetic import SyntheticSource
    from cdb.observability import logging as cdb_logging
    from cdb.runtime.distributed import LagPacer
    from cdb.runtime.service import ServiceHost
    from cdb.services.base import ServiceContext
    from cdb.services.ws import WsService

    settings = load_settings()
    cdb_logging.configure(settings.log_level, sys.stderr)
    source = SyntheticSource(seed=settings.ws_seed, symbols=settings.symbols(),
                             duration_s=seconds, trades_per_s=rate, start_ns=0)
    replace = msgspec.structs.replace

    async def arrivals() -> Any:
        trades = (t for b in source.batches() for t in b)
        t0 = time.monotonic()
        pending = next(trades, None)
        while pending is not None:
            delay = t0 + pending.ts / 1e9 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            batch = []
            while pending is not None and t0 + pending.ts / 1e9 <= now:
                batch.append(replace(pending, ts=time.time_ns()))
                pending = next(trades, None)
            if batch:
                yield batch

    async def run() -> tuple[int, float]:
        client = make_redis(settings)
        bus = make_bus(settings, client, service="ws", instance="ws-live")
        await bus.start()
        ctx = ServiceContext(name="ws", instance="ws-live", bus=bus, clock=WallClock())
        service = WsService(ctx, arrivals(), LagPacer(bus, None))
        started = time.monotonic()
        host = ServiceHost(service)
        await host.start()
        await host.wait_producer()
        elapsed = time.monotonic() - started
        await host.stop()
        await bus.close()
        return service.trades, elapsed

    import uvloop  # as `cdb service ws` runs (cdb.cli.run_loop)

    trades, elapsed = uvloop.run(run())
    print(json.dumps({"trades": trades, "rate": trades / elapsed}))


# -- report -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--naive-trades", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--redis-n", type=int, default=200_000)
    parser.add_argument("--skip", default="", help="comma list of: throughput,redis,latency")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--child-feed", nargs=2, type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_feed:
        child_feed(*args.child_feed)
        return
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, Any] = {"cpus": os.cpu_count(), "calibration": calibrate()}
    print(f"calibration (Redis PING round trip): {report['calibration']}", flush=True)
    if "throughput" not in skip:
        path = make_file(args.trades)
        runs, naive_runs = [], []
        for i in range(args.repeat):
            runs.append(throughput(path, args.trades, {}))
            r = runs[-1]
            print(f"[{i + 1}/{args.repeat}] cdb   {r['rate']:9,.0f} trades/s ({r['seconds']} s; "
                  f"steady {r['steady_rate']:,.0f}/s; checked {r['checked']}; "
                  f"load {r['load_before']} -> {r['load_after']})", flush=True)
            naive_runs.append(naive(path, args.naive_trades))
            n = naive_runs[-1]
            print(f"[{i + 1}/{args.repeat}] naive {n['rate']:9,.0f} trades/s "
                  f"({n['seconds']:.1f} s; "
                  f"load {n['load_before']} -> {n['load_after']})", flush=True)
        best = max(runs, key=lambda r: r["rate"])
        best_naive = max(naive_runs, key=lambda r: r["rate"])
        report["throughput"] = {"runs": runs, "best": best, "naive_runs": naive_runs,
                                "best_naive": best_naive,
                                "ratio": best["rate"] / best_naive["rate"],
                                "ratio_per_round": [r["rate"] / n["rate"]
                                                    for r, n in zip(runs, naive_runs, strict=True)]}
    if "redis" not in skip:
        report["redis_benchmark"] = redis_benchmark(args.redis_n)
    if "latency" not in skip:
        report["latency"] = latency(args.rate, args.latency_s, args.warmup_s)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


def print_report(report: dict[str, Any]) -> None:
    print(f"\nhost: {report['cpus']} CPUs, {host_load()}")
    print(f"PING round trip   {report['calibration']}")
    t = report.get("throughput")
    if t:
        best, nb = t["best"], t["best_naive"]
        print(f"throughput        {best['rate']:,.0f} trades/s end to end "
              f"({best['trades']:,} trades "
              f"in {best['seconds']} s, best of {len(t['runs'])}); steady "
              f"{best['steady_rate']:,.0f}/s")
        print(f"                  signals {best['published']['stream.signals']}, orders "
              f"{best['published']['stream.orders']}, fills {best['published']['stream.fills']}; "
              f"db {best['db']}; checked {best['checked']}")
        print(f"                  CPU % per process {best['cpu_pct']}")
        print(f"                  CPU us per trade {best['cpu_us_per_trade']} = "
              f"{best['cpu_us_per_trade_total']} us")
        print(f"naive             {nb['rate']:,.0f} trades/s ({nb['trades']:,} trades, best of "
              f"{len(t['naive_runs'])})")
        per_round = ", ".join(f"{x:.1f}" for x in t["ratio_per_round"])
        print(f"cdb / naive       {t['ratio']:.1f}x (per round: {per_round})")
        rss = {n: max(r["rss_mb"][n] for r in t["runs"]) for n in SERVICES}
        print(f"RSS (max, MB)     {rss}")
    for row in report.get("redis_benchmark", []):
        print(f"redis-benchmark   {row['rps']:>11,.0f} req/s  {row['command']}")
    lat = report.get("latency")
    if lat:
        print(f"tick-to-order     at {lat['trades_per_s']:,.0f} trades/s: "
              f"p50 {lat['p50_ms']:.2f} ms, "
              f"p90 {lat['p90_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, mean "
              f"{lat['mean_ms']:.2f} ms ({lat['samples']} orders)")
        print(f"                  host during the window: {lat['load_before']} -> "
              f"{lat['load_after']} (cpu_pressure_pct: share of time a task waited for a CPU)")
        print(f"                  hops (ms, from Redis entry ids) {lat['hops_ms']}")
        print(f"                  CPU % {lat['cpu_pct']}; RSS MB {lat['rss_mb']}; RSS growth "
              f"MB/min {lat['rss_growth_mb_per_min']}")


if __name__ == "__main__":
    main()
