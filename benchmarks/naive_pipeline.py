"""The naive baseline of the distributed benchmark: five stages, one event at a time.

The same five stages as cdb's distributed mode, each its own process, on the same
Redis and PostgreSQL, with the same events (cdb's msgpack ``Trade``/``Signal``/
``Order``/``Fill``), the same strategy object and the same stream topology (trades read
by three groups: signal, risk, execution), but the obvious way to use Redis Streams:

- ws: one ``XADD`` per trade, each awaited;
- every consumer: one ``XREADGROUP ... COUNT 1`` then one ``XACK`` per event;
- db_writer: one ``INSERT ... ON CONFLICT DO NOTHING`` (its own commit) per event.

The work per event is what cdb does, no less: decode, run the momentum strategy on
the trade, approve each signal into a market order (risk), fill each order at its
reference price (execution). It uses the synchronous redis-py client with hiredis
(less overhead per round trip than asyncio, so the fairest one-at-a-time baseline)
and asyncpg for PostgreSQL. Streams are not trimmed, so the producer never waits for
the consumers: that only helps the baseline.

Run by ``bench_distributed.py``; standalone::

    .venv/bin/python benchmarks/naive_pipeline.py run --redis URL --postgres DSN \\
        --replay FILE --trades 100000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

MARKET_DATA = "stream.market_data"
SIGNALS = "stream.signals"
ORDERS = "stream.orders"
FILLS = "stream.fills"
INPUTS = {
    "signal": (MARKET_DATA,),
    "risk": (MARKET_DATA, SIGNALS),
    "execution": (MARKET_DATA, ORDERS),
    "db_writer": (SIGNALS, ORDERS, FILLS),
}
"""Stage -> the streams its consumer group reads (as cdb's services, minus alerts)."""
BLOCK_MS = 200


def _key(ns: str, stream: str) -> str:
    return f"{ns}:{stream}"


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, decode_responses=False)


def run_ws(url: str, ns: str, replay: str, trades: int) -> None:
    """Publish the first ``trades`` trades of ``replay``, one XADD each."""
    from cdb.events import encode
    from cdb.marketdata.replay import ReplaySource

    client = _client(url)
    key = _key(ns, MARKET_DATA)
    stream = (t for b in ReplaySource([Path(replay)]).batches() for t in b)
    for trade in itertools.islice(stream, trades):
        client.xadd(key, {b"e": encode(trade)})
    client.close()


def run_consumer(stage: str, url: str, ns: str) -> None:
    """Read one event at a time, do the stage's work, publish, acknowledge."""
    from cdb.events import Fill, Order, Signal, decode, encode
    from cdb.strategies.base import StrategyParams
    from cdb.strategies.momentum import MomentumStrategy

    client = _client(url)
    keys = {_key(ns, s): s for s in INPUTS[stage]}
    streams = dict.fromkeys(keys, ">")
    consumer = f"{stage}-1"
    instance = f"naive-{stage}"
    # Same parameters as cdb's defaults (SIGNAL_* settings).
    strategy = MomentumStrategy(StrategyParams(
        strategy_id="momentum", threshold_pct=float(os.environ.get("SIGNAL_THRESHOLD_PCT", 3.0)),
        min_volume=float(os.environ.get("SIGNAL_MIN_VOLUME", 100_000.0)),
        lookback_s=float(os.environ.get("SIGNAL_LOOKBACK_S", 60.0)),
    ))
    last_price: dict[str, int] = {}
    print("ready", flush=True)
    while True:
        reply = client.xreadgroup(stage, consumer, streams, count=1, block=BLOCK_MS)
        for key, entries in _entries(reply):
            for entry_id, fields in entries:
                event = decode(fields[b"e"])
                out: tuple[str, Any] | None = None
                if stage == "signal":
                    for i in strategy.on_trades([event]):  # type: ignore[list-item]
                        t = i.trade
                        out = (SIGNALS, Signal(
                            id=f"momentum:{t.id}", ts=t.ts, correlation_id=t.id,
                            causation_id=t.id, source=instance, strategy_id="momentum",
                            symbol=t.symbol, side=i.side, price_e8=t.price_e8,
                            trade_id=t.trade_id, move_bp=i.move_bp, volume_e8=i.volume_e8,
                        ))
                elif stage == "risk":
                    if isinstance(event, Signal):
                        out = (ORDERS, Order(
                            id=f"o-{event.id}", ts=event.ts, correlation_id=event.correlation_id,
                            causation_id=event.id, source=instance,
                            client_order_id=f"c-{event.id}"[:36], symbol=event.symbol,
                            side=event.side, order_type="MARKET", qty_e8=1_000_000,
                            ref_price_e8=last_price.get(event.symbol, event.price_e8),
                        ))
                    else:
                        last_price[event.symbol] = event.price_e8  # type: ignore[union-attr]
                elif stage == "execution" and isinstance(event, Order):
                    out = (FILLS, Fill(
                        id=f"{event.id}-f1", ts=event.ts, correlation_id=event.correlation_id,
                        causation_id=event.id, source=instance, order_id=event.id,
                        client_order_id=event.client_order_id, venue="paper",
                        symbol=event.symbol, side=event.side, price_e8=event.ref_price_e8,
                        qty_e8=event.qty_e8, fee_e8=0, venue_fill_id=f"{event.id}-1",
                        order_status="FILLED", cum_qty_e8=event.qty_e8,
                    ))
                if out is not None:
                    client.xadd(_key(ns, out[0]), {b"e": encode(out[1])})
                client.xack(key, stage, entry_id)


async def run_db_writer(url: str, ns: str, dsn: str) -> None:
    """Read one event at a time and insert it, one commit per event."""
    import asyncpg
    import redis.asyncio as aioredis

    from cdb.events import decode

    client = aioredis.Redis.from_url(url, decode_responses=False)
    conn = await asyncpg.connect(dsn)
    table = f'"naive_{ns}"'
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, kind text, ts bigint, "
        "body bytea)"
    )
    insert = f"INSERT INTO {table} VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"  # noqa: S608
    streams = {_key(ns, s): ">" for s in INPUTS["db_writer"]}
    print("ready", flush=True)
    while True:
        reply = await client.xreadgroup("db_writer", "db_writer-1", streams, count=1,
                                        block=BLOCK_MS)
        for key, entries in _entries(reply):
            for entry_id, fields in entries:
                data = fields[b"e"]
                event = decode(data)
                await conn.execute(insert, event.id, type(event).__name__, event.ts, data)
                await client.xack(key, "db_writer", entry_id)


def _entries(reply: Any) -> list[tuple[Any, list[Any]]]:
    """(stream, entries) of an XREADGROUP reply, RESP2 list or RESP3 dict."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(item[0], item[1]) for item in reply]


class _Watch(threading.Thread):
    """Records the ms timestamp of the first entry added to the trade stream."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.first_ms: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        client = _client(self.url)
        while not self.stop.is_set() and self.first_ms is None:
            first = client.xrange(self.key, "-", "+", count=1)
            if first:
                self.first_ms = int(first[0][0].split(b"-")[0])
            else:
                time.sleep(0.002)
        client.close()


def run(url: str, dsn: str, replay: str, trades: int, timeout: float = 600.0) -> dict[str, Any]:
    """Run the naive pipeline over ``trades`` trades; its rate and counts.

    The time runs from the first trade added to the moment every group has acknowledged
    everything (the db_writer's acks come after its inserts).
    """
    ns = f"naive{uuid.uuid4().hex[:8]}"
    client = _client(url)
    for stage, topics in INPUTS.items():
        for topic in topics:
            client.xgroup_create(_key(ns, topic), stage, id="0", mkstream=True)
    me = [sys.executable, __file__]
    env = dict(os.environ)
    consumers = [
        subprocess.Popen([*me, "stage", stage, "--redis", url, "--ns", ns, "--postgres", dsn],
                         stdout=subprocess.PIPE, env=env)
        for stage in INPUTS
    ]
    try:
        for proc in consumers:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("a naive stage did not start")
        watch = _Watch(url, _key(ns, MARKET_DATA))
        watch.start()
        ws = subprocess.Popen([*me, "stage", "ws", "--redis", url, "--ns", ns,
                               "--replay", replay, "--trades", str(trades)], env=env)
        deadline = time.monotonic() + timeout
        while True:
            done = ws.poll() is not None
            backlog = _backlog(client, ns)
            if done and backlog == 0:
                end = time.time()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"naive pipeline not drained after {timeout} s")
            time.sleep(0.01)
        watch.stop.set()
        watch.join()
        if ws.returncode != 0 or watch.first_ms is None:
            raise RuntimeError(f"naive ws exited {ws.returncode}")
        seconds = end - watch.first_ms / 1000
        counts = {s: int(client.xlen(_key(ns, s))) for s in (SIGNALS, ORDERS, FILLS)}
        return {"trades": trades, "seconds": seconds, "rate": trades / seconds,
                "signals": counts[SIGNALS], "orders": counts[ORDERS], "fills": counts[FILLS]}
    finally:
        for proc in consumers:
            proc.terminate()
        for proc in consumers:
            proc.wait()
        for stream in (MARKET_DATA, SIGNALS, ORDERS, FILLS):
            client.delete(_key(ns, stream))
        client.close()


def _backlog(client: Any, ns: str) -> int:
    total = 0
    for stage, topics in INPUTS.items():
        for topic in topics:
            for group in client.xinfo_groups(_key(ns, topic)):
                name = group["name"]
                if (name.decode() if isinstance(name, bytes) else name) == stage:
                    total += int(group["pending"]) + int(group.get("lag") or 0)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the whole naive pipeline and print its rate")
    s = sub.add_parser("stage", help=argparse.SUPPRESS)
    s.add_argument("stage", choices=("ws", *INPUTS))
    s.add_argument("--ns", required=True)
    for p in (r, s):
        p.add_argument("--redis", required=True)
        p.add_argument("--postgres", default="")
        p.add_argument("--replay", default="")
        p.add_argument("--trades", type=int, default=100_000)
    args = parser.parse_args()
    if args.cmd == "run":
        print(json.dumps(run(args.redis, args.postgres, args.replay, args.trades)))
    elif args.stage == "ws":
        run_ws(args.redis, args.ns, args.replay, args.trades)
    elif args.stage == "db_writer":
        asyncio.run(run_db_writer(args.redis, args.ns, args.postgres))
    else:
        run_consumer(args.stage, args.redis, args.ns)


if __name__ == "__main__":
    main()
