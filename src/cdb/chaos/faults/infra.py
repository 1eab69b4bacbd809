"""Faults on the infrastructure: the throwaway Redis and PostgreSQL go down.

``redis_down`` stops Redis (``stop``: SIGTERM, its AOF keeps the data; ``kill``: a
crash; ``pause``: SIGSTOP, connections hang; with ``empty``, its data files are deleted
before the restart, as a Redis replaced by a new one) and ``postgres_down`` stops PostgreSQL
(``stop`` fast, ``kill`` immediate); the undo starts them again on the same port.
The effect is checked from outside: the port refuses connections (or hangs).
A Redis that cannot listen on its port again at once (something holds it) is retried
for a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cdb.chaos.faults.base import ScenarioFault
from cdb.chaos.history.recording import Effect
from cdb.chaos.scenario.registry import FAULTS, P
from cdb.testing.redis import RedisServerError

_RESTART_S = 15.0


async def port_state(host: str, port: int, timeout: float = 1.0) -> str:
    """``open``, ``refused`` or ``hangs`` (no answer within ``timeout``)."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return "hangs"
    except OSError:
        return "refused"
    writer.close()
    return "open"


async def redis_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis at host:port answers (anything) to a PING within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (TimeoutError, OSError):
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        async with asyncio.timeout(timeout):
            data = await reader.read(64)
        return bool(data)
    except (TimeoutError, OSError):
        return False
    finally:
        writer.close()


@FAULTS.register("redis_down", summary="take the pipeline's Redis down (stop, kill or "
                 "pause); started again on undo",
                 params={"mode": P.string("stop (SIGTERM), kill (crash) or pause (SIGSTOP)",
                                          enum=["stop", "kill", "pause"]),
                         "empty": P.boolean("restart it with no data (stop or kill)")},
                 modes=("distributed",))
class RedisDown(ScenarioFault):
    async def apply(self) -> Any:
        server = self.ctx.target.infra("redis")
        mode = self.p.text("mode", "stop")
        if mode == "pause":
            server.pause()
        else:
            await asyncio.to_thread(server.stop, kill=mode == "kill")
        self.evidence.append(f"redis on port {server.port}: {mode}")
        return self.evidence[-1]

    async def effect(self) -> Effect:
        server = self.ctx.target.infra("redis")
        answers = await redis_answers(server.host, server.port, timeout=0.5)
        if answers:
            return Effect(took_effect=False, evidence=f"redis on port {server.port} still "
                                                       "answers")
        return Effect(took_effect=True, evidence=f"redis on port {server.port} does not answer")

    async def undo(self) -> Any:
        server = self.ctx.target.infra("redis")
        if self.p.text("mode", "stop") == "pause":
            server.resume()
            return f"redis on port {server.port} is back"
        empty = self.p.flag("empty")
        if empty:
            await asyncio.to_thread(server.wipe)
        deadline = time.monotonic() + _RESTART_S
        tries = 1
        while True:
            try:
                await asyncio.to_thread(server.start)
                break
            except RedisServerError:
                if time.monotonic() > deadline:
                    raise
                tries += 1
                await asyncio.sleep(0.5)
        return (f"redis on port {server.port} is back" + (" empty" if empty else "")
                + (f" ({tries} tries)" if tries > 1 else ""))


@FAULTS.register("postgres_down", summary="take the pipeline's PostgreSQL down (stop or "
                 "kill); started again on undo",
                 params={"mode": P.string("stop (fast shutdown) or kill (immediate)",
                                          enum=["stop", "kill"])},
                 modes=("distributed",))
class PostgresDown(ScenarioFault):
    async def apply(self) -> Any:
        server = self.ctx.target.infra("postgres")
        await asyncio.to_thread(server.stop, kill=self.p.text("mode", "stop") == "kill")
        self.evidence.append(f"postgres on port {server.port} stopped")
        return self.evidence[-1]

    async def effect(self) -> Effect:
        server = self.ctx.target.infra("postgres")
        state = await port_state(server.host, server.port, 0.5)
        return Effect(took_effect=state != "open",
                      evidence=f"postgres port {server.port} {state}")

    async def undo(self) -> Any:
        server = self.ctx.target.infra("postgres")
        await asyncio.to_thread(server.start)
        return f"postgres on port {server.port} is back"
