"""How fast the console serves its overview with 20 service instances registered.

A throwaway redis-server (``cdb.testing``) holds 20 discovery records (four of each
service) whose addresses point at one small HTTP server answering ``/health`` like a
cdb service; the real console (``Watcher`` + app, uvicorn on a free port) watches them,
and a client asks for ``/`` (the full page) and ``/fragments/overview`` (what htmx
polls) N times each, one after the other. Reported: median, p95 and max latency, and
how long one watcher refresh takes (discovery, 20 ``/health``, consumer groups). The
target: the overview under 100 ms.

``--throughput``: what one open console costs the pipeline. The real ``cdb up`` (five
processes, throwaway Redis and PostgreSQL) replays the same file at ``WS_SPEED=max``,
in interleaved rounds without and with a ``cdb console`` process watching it and a
client polling it as an open browser does (overview fragment every 1 s, book fragment
every 2 s, equity data every 5 s). Reported per round: trades/s from the first trade
in ``stream.market_data`` until every consumer group has acknowledged everything, and
the CPU the console process used over that span (its start-up excluded).

    .venv/bin/python benchmarks/bench_console.py --requests 500
    .venv/bin/python benchmarks/bench_console.py --throughput --trades 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
from fastapi import FastAPI

from cdb.bus.keys import Namespace
from cdb.console.app import Console, build_app
from cdb.console.auth import Sessions
from cdb.console.state import Watcher
from cdb.runtime.discovery import InstanceRecord, alive_key, registry_key
from cdb.runtime.http import HttpServer
from cdb.testing.ports import restartable_port
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually

SERVICES = ("ws", "signal", "risk", "execution", "db_writer")


def fake_service() -> FastAPI:
    app = FastAPI()
    body = {"service": "x", "instance": "x", "version": "0.1.0", "status": "healthy",
            "uptime_s": 100.0, "dependencies": {
                "redis": {"status": "up", "latency_ms": 0.4, "last_error": None},
                "postgres": {"status": "up", "latency_ms": 1.1, "last_error": None}},
            "details": {"pid": 1, "buffered_events": 0,
                        "ess": {"state": "ACTIVE", "cooldown_s": 300.0}}}

    @app.get("/health")
    async def health() -> dict[str, object]:
        return body

    @app.get("/ess")
    async def ess() -> dict[str, object]:
        return {"state": "ACTIVE", "reason": "", "cooldown_s": 300.0, "cooldown_left_s": 0}

    return app


async def register(client: object, namespace: Namespace, address: str, count: int) -> None:
    import redis.asyncio as aioredis

    assert isinstance(client, aioredis.Redis)
    now = time.time_ns()
    for k in range(count):
        service = SERVICES[k % len(SERVICES)]
        record = InstanceRecord(service=service, instance=f"{service}-{k // len(SERVICES)}",
                                address=address, version="0.1.0", started="", started_ns=now,
                                last_seen_ns=now)
        await client.hset(registry_key(namespace), record.key, msgspec.json.encode(record))
        await client.set(alive_key(namespace, record.key), b"1", px=600_000)


async def timed(http: httpx.AsyncClient, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = await http.get(path)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"median_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 2),
            "max_ms": round(ordered[-1], 2)}


async def main(requests: int, instances: int) -> dict[str, object]:
    namespace = Namespace("bench-console")
    with RedisServer() as redis_server:
        client = redis_server.client()
        service_port, console_port = restartable_port(), restartable_port()
        fake = HttpServer(fake_service(), "127.0.0.1", service_port)
        await fake.start()
        await register(client, namespace, f"http://127.0.0.1:{service_port}", instances)
        watcher = Watcher(records=None, redis=client, namespace=namespace, api_token=None)
        console = Console(watcher, Sessions(None), Path("/nonexistent"))
        async with watcher:
            refreshes = []
            for _ in range(20):
                started = time.perf_counter()
                await watcher.refresh()
                refreshes.append((time.perf_counter() - started) * 1000)
            assert len(watcher.snapshot.instances) == instances
            app_server = HttpServer(build_app(console), "127.0.0.1", console_port)
            await app_server.start()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{console_port}") as http:
                await timed(http, "/", 20)  # warm up (template compilation)
                page = summary(await timed(http, "/", requests))
                fragment = summary(await timed(http, "/fragments/overview", requests))
            await app_server.stop()
        await fake.stop()
        await client.aclose()
        await asyncio.sleep(0.2)
    return {"instances": instances, "requests": requests, "overview_page": page,
            "overview_fragment": fragment, "watcher_refresh": summary(refreshes)}


def make_file(trades: int) -> Path:
    """A Binance ``trades`` CSV of ``trades`` synthetic BTCUSDT trades (cached)."""
    import itertools

    from cdb.marketdata.synthetic import SyntheticSource
    from cdb.testing.marketfiles import write_trades_csv

    data = Path(__file__).parent / ".data"
    path = data / f"BTCUSDT-trades-{trades}.csv"
    if not path.exists():
        data.mkdir(exist_ok=True)
        source = SyntheticSource(seed=1, symbols=["BTCUSDT"], duration_s=trades / 40)
        stream = itertools.islice((t for b in source.batches() for t in b), trades)
        write_trades_csv(path, stream, layout="trades")
    return path


def _progress(client: Any, keys: list[str]) -> tuple[int, int]:
    """Trades added to the first stream, and the backlog of every group of every stream."""
    pipe = client.pipeline(transaction=False)
    pipe.xinfo_stream(keys[0])
    for key in keys:
        pipe.xinfo_groups(key)
    replies = pipe.execute(raise_on_error=False)
    added = 0 if isinstance(replies[0], Exception) else int(replies[0]["entries-added"])
    backlog = sum(int(g["pending"]) + int(g.get("lag") or 0)
                  for reply in replies[1:] if not isinstance(reply, Exception) for g in reply)
    return added, backlog


class Browsing(threading.Thread):
    """Polls a console as one open browser tab does, until ``stop`` is set."""

    def __init__(self, url: str) -> None:
        super().__init__(name="browsing", daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.requests = 0
        self.refreshes_seen: set[str] = set()

    def run(self) -> None:
        schedule = {"/fragments/overview": 1.0, "/fragments/book": 2.0, "/data/equity": 5.0}
        due = dict.fromkeys(schedule, 0.0)
        with httpx.Client(base_url=self.url, timeout=10) as web:
            while not self.stop.is_set():
                now = time.monotonic()
                for path, every in schedule.items():
                    if now >= due[path]:
                        text = web.get(path).text
                        self.requests += 1
                        due[path] = now + every
                        if path == "/fragments/overview":
                            found = re.search(r"as of ([0-9:. -]+) UTC", text)
                            if found:
                                self.refreshes_seen.add(found[1])
                self.stop.wait(0.05)


def throughput_round(path: Path, trades: int, with_console: bool) -> dict[str, Any]:
    """One ``cdb up`` run over ``path``, with or without a console open."""
    from cdb.bus.keys import ALL_STREAMS, Namespace
    from cdb.testing.cluster import REDIS_PASSWORD, LocalPipeline

    env = {"WS_SOURCE": "replay", "WS_REPLAY": str(path), "WS_SPEED": "max",
           "WS_SYMBOLS": "BTCUSDT", "LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory(prefix="cdb-bench-console-") as tmp, \
            LocalPipeline(Path(tmp), env) as p:
        console: subprocess.Popen[bytes] | None = None
        console_cpu = cpu_at_first = 0.0
        browsing: Browsing | None = None
        if with_console:
            port = restartable_port()
            console = subprocess.Popen(
                [sys.executable, "-m", "cdb", "console", "--port", str(port),
                 "--redis", f"redis://:{REDIS_PASSWORD}@127.0.0.1:{p.redis.port}/0",
                 "--postgres", p.postgres_url],
                env=p.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            eventually(lambda: _answers(f"http://127.0.0.1:{port}/health"), 30, "console")
            browsing = Browsing(f"http://127.0.0.1:{port}")
            browsing.start()
        client = p.redis_client()
        keys = [Namespace(p.namespace).key(s) for s in ALL_STREAMS]
        try:
            p.start()
            first = end = None
            deadline = time.monotonic() + 120 + trades / 2000
            while end is None:
                added, backlog = _progress(client, keys)
                now = time.monotonic()
                if first is None and added > 0:
                    first = now
                    # The console's start (imports, first refresh) is not the run's cost.
                    cpu_at_first = cpu_seconds(console.pid) if console is not None else 0.0
                if added >= trades and backlog == 0:
                    end = now
                if now > deadline:
                    raise TimeoutError(f"pipeline not drained: {p.logs()[-2000:]}")
                time.sleep(0.02)
            assert first is not None
            seconds = end - first
            if console is not None:
                console_cpu = cpu_seconds(console.pid) - cpu_at_first
        finally:
            client.close()
            if browsing is not None:
                browsing.stop.set()
                browsing.join()
            if console is not None:
                console.terminate()
                console.wait(10)
    out: dict[str, Any] = {"console": with_console, "trades": trades,
                           "seconds": round(seconds, 3), "rate": round(trades / seconds)}
    if browsing is not None:
        out["console_requests"] = browsing.requests
        out["console_refreshes_seen"] = len(browsing.refreshes_seen)
        out["console_cpu_s"] = round(console_cpu, 2)
        out["console_cpu_pct_of_run"] = round(100 * console_cpu / seconds, 1)
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def throughput(trades: int, rounds: int) -> dict[str, Any]:
    path = make_file(trades)
    runs = []
    for i in range(rounds):
        # Interleaved, the order alternating: both see the same host over time.
        for with_console in ((False, True) if i % 2 == 0 else (True, False)):
            result = throughput_round(path, trades, with_console)
            print(json.dumps(result), flush=True)
            runs.append(result)
    alone = [r["rate"] for r in runs if not r["console"]]
    watched = [r["rate"] for r in runs if r["console"]]
    return {"trades": trades, "rounds": rounds, "runs": runs,
            "without_console": {"median": statistics.median(alone), "best": max(alone)},
            "with_console": {"median": statistics.median(watched), "best": max(watched)},
            "ratio_of_medians": round(statistics.median(watched) / statistics.median(alone), 3),
            "spread_without": round((max(alone) - min(alone)) / statistics.median(alone), 3)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--throughput", action="store_true",
                        help="pipeline throughput with and without one console open")
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.throughput:
        print(json.dumps(throughput(args.trades, args.rounds), indent=1))
    else:
        print(json.dumps(asyncio.run(main(args.requests, args.instances)), indent=1))
