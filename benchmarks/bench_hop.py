"""One bus hop on this host, loopback TCP against a Unix-domain socket.

The floor under tick-to-order: a producer ``XADD``s an entry stamped with the wall
clock at ``--rate`` entries/s; a consumer in another process, blocked in
``XREADGROUP ... BLOCK``, wakes, reads it and notes now minus the stamp. No cdb code on
the path: what is measured is the kernel, Redis and the scheduler. Same throwaway
``redis-server`` (no persistence), both transports in one run, interleaved in rounds.
Usage:

    .venv/bin/python benchmarks/bench_hop.py [--rate 1000] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STREAM = "hop"


def consumer(kind: str, where: str, count: int) -> None:
    """Child: read ``count`` entries as they come, print the hop times (µs) as JSON."""
    import redis

    client = (redis.Redis(unix_socket_path=where) if kind == "unix"
              else redis.Redis(host="127.0.0.1", port=int(where)))
    client.ping()
    print("ready", flush=True)
    hops: list[int] = []
    while len(hops) < count:
        reply = client.xreadgroup("g", "c", {STREAM: ">"}, count=100, block=5000)
        now = time.time_ns()
        for _, entries in reply or []:
            hops += [(now - int(fields[b"t"])) // 1000 for _, fields in entries]
            client.xack(STREAM, "g", *(entry_id for entry_id, _ in entries))
    print(json.dumps(hops), flush=True)


def one(kind: str, where: str, client: Any, rate: float, seconds: float) -> dict[str, float]:
    client.delete(STREAM)
    client.xgroup_create(STREAM, "g", id="0", mkstream=True)
    count = int(rate * seconds)
    child = subprocess.Popen([sys.executable, __file__, "--consumer", kind, where, str(count)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    child.stdout.readline()  # ready
    time.sleep(0.2)  # let it block
    t0 = time.monotonic()
    for n in range(count):
        due = t0 + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.xadd(STREAM, {"t": time.time_ns()})
    hops = sorted(json.loads(child.stdout.read().strip().splitlines()[-1]))
    child.wait()
    pick = lambda q: hops[min(len(hops) - 1, int(q * len(hops)))] / 1000  # noqa: E731
    return {"p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99), "n": len(hops)}


def pressure() -> float:
    line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    return float(line.split()[1].split("=")[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--consumer", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consumer:
        kind, where, count = args.consumer
        consumer(kind, where, int(count))
        return
    import redis

    from cdb.testing.redis import RedisServer

    with tempfile.TemporaryDirectory(prefix="cdb-hop-") as tmp:
        sock = f"{tmp}/redis.sock"
        with RedisServer(args=("--unixsocket", sock, "--unixsocketperm", "700")) as server:
            transports = {"tcp": (str(server.port), redis.Redis(port=server.port)),
                          "unix": (sock, redis.Redis(unix_socket_path=sock))}
            for n in range(args.rounds):
                for kind, (where, client) in transports.items():
                    before = pressure()
                    r = one(kind, where, client, args.rate, args.seconds)
                    print(f"round {n + 1} {kind:4}: one hop p50 {r['p50_ms']:.3f} ms, "
                          f"p90 {r['p90_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms ({r['n']} "
                          f"entries at {args.rate:g}/s; cpu pressure {before:.0f}-"
                          f"{pressure():.0f} %)", flush=True)


if __name__ == "__main__":
    main()
