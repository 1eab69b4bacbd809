"""How fast the console serves its overview with 20 service instances registered.

A throwaway redis-server (``cdb.testing``) holds 20 discovery records (four of each
service) whose addresses point at one small HTTP server answering ``/health`` like a
cdb service; the real console (``Watcher`` + app, uvicorn on a free port) watches them,
and a client asks for ``/`` (the full page) and ``/fragments/overview`` (what htmx
polls) N times each, one after the other. Reported: median, p95 and max latency, and
how long one watcher refresh takes (discovery, 20 ``/health``, consumer groups). The
target: the overview under 100 ms.

    .venv/bin/python benchmarks/bench_console.py --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx
import msgspec
from fastapi import FastAPI

from cdb.bus.keys import Namespace
from cdb.console.app import Console, build_app
from cdb.console.auth import Sessions
from cdb.console.state import Watcher
from cdb.observability.discovery import InstanceRecord, alive_key, registry_key
from cdb.runtime.http import HttpServer
from cdb.testing.ports import restartable_port
from cdb.testing.redis import RedisServer

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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--instances", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(main(args.requests, args.instances))
    print(json.dumps(result, indent=1))
