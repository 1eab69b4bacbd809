"""Concurrent HTTP load: N requests at once, their error rate and latency quantiles.

Used to load the NGINX gateway in front of a running pipeline (every service's
``/health`` through ``/api/<service>/health``): all requests are started together,
each on its own connection, so the gateway really holds N client connections at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

import httpx
import msgspec


class LoadResult(msgspec.Struct, kw_only=True):
    requests: int
    concurrency: int
    errors: int
    error_rate: float
    statuses: dict[str, int]
    """Answers by status code, and failed requests by exception type."""
    p50_ms: float
    p99_ms: float
    max_ms: float
    wall_s: float

    def line(self) -> str:
        return (f"{self.requests} requests, {self.concurrency} at once: "
                f"{self.error_rate:.2%} errors, p50 {self.p50_ms:.1f} ms, "
                f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms, {self.wall_s:.2f}s")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] if ordered else 0.0


async def load(urls: list[str], requests: int = 1000, concurrency: int = 1000,
               timeout: float = 30.0) -> LoadResult:
    """``requests`` GETs spread round-robin over ``urls``, ``concurrency`` at a time
    (a 2xx answer is a success)."""
    gate = asyncio.Semaphore(concurrency)
    start_line = asyncio.Event()
    statuses: Counter[str] = Counter()
    times: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)

    async def one(client: httpx.AsyncClient, url: str) -> None:
        async with gate:
            await start_line.wait()
            t0 = time.perf_counter()
            try:
                response = await client.get(url)
                statuses[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            times.append((time.perf_counter() - t0) * 1000)

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        tasks = [asyncio.create_task(one(client, urls[i % len(urls)]), name=f"load.{i}")
                 for i in range(requests)]
        await asyncio.sleep(0)  # every task waits at the line
        wall0 = time.perf_counter()
        start_line.set()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - wall0
    errors = sum(n for code, n in statuses.items() if not code.startswith("2"))
    return LoadResult(requests=requests, concurrency=concurrency, errors=errors,
                      error_rate=errors / requests if requests else 0.0,
                      statuses=dict(statuses), p50_ms=round(_quantile(times, 0.5), 2),
                      p99_ms=round(_quantile(times, 0.99), 2),
                      max_ms=round(max(times, default=0.0), 2), wall_s=round(wall, 3))
