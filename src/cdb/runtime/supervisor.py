"""``cdb up``: the five services as local processes, restarted when they crash.

Each service runs as ``python -m cdb service NAME`` with the environment given; a
process that exits unexpectedly is restarted after an exponential backoff (1 s
doubling to 30 s, reset once it has stayed up for a minute). Stopping sends SIGTERM
upstream first (ws, signal, risk, execution, db_writer) so each stage drains what
the one before it published, then SIGKILLs whatever outlives the drain timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cdb.runtime.distributed import SERVICES

STARTUP_ORDER = ("db_writer", "execution", "risk", "signal", "ws")
"""Consumers first, so their groups exist before the first trade is published."""


@dataclass(slots=True)
class Child:
    """One supervised service process."""

    name: str
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    state: str = "starting"
    last_exit: int | None = None
    backoff: float = 1.0
    history: list[int] = field(default_factory=list)


class Supervisor:
    """Starts, watches and stops the service processes.

    Args:
        env: environment of the children (settings and secrets files).
        log_dir: where each child's output goes (``<service>.log``).
        services: which services to run.
        drain_timeout: seconds a child gets to drain after SIGTERM.
    """

    def __init__(
        self, env: dict[str, str], log_dir: Path, services: tuple[str, ...] = SERVICES,
        drain_timeout: float = 15.0, max_backoff: float = 30.0,
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children = {name: Child(name) for name in services}
        self.drain_timeout = drain_timeout
        self.max_backoff = max_backoff
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    async def _spawn(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{child.name}.log").open("ab")
        try:
            child.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cdb", "service", child.name,
                env=self.env, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        child.started_at = time.monotonic()
        child.state = "running"

    async def start(self) -> None:
        """Start every service (consumers first) and watch them."""
        for name in STARTUP_ORDER:
            if name in self.children:
                await self._spawn(self.children[name])
        for child in self.children.values():
            task = asyncio.create_task(self._watch(child), name=f"watch.{child.name}")
            self._watchers.append(task)

    async def _watch(self, child: Child) -> None:
        while not self._stopping:
            assert child.process is not None
            code = await child.process.wait()
            child.last_exit = code
            child.history.append(code)
            if self._stopping:
                child.state = "stopped"
                return
            if time.monotonic() - child.started_at > 60:
                child.backoff = 1.0
            child.state = f"crashed ({code}); restart in {child.backoff:.0f}s"
            await asyncio.sleep(child.backoff)
            child.backoff = min(child.backoff * 2, self.max_backoff)
            if self._stopping:
                return
            child.restarts += 1
            await self._spawn(child)

    def pid(self, name: str) -> int | None:
        proc = self.children[name].process
        return proc.pid if proc else None

    async def stop(self) -> None:
        """SIGTERM upstream first, wait for each to drain, SIGKILL what is left."""
        self._stopping = True
        for name in SERVICES:
            child = self.children.get(name)
            if child is None or child.process is None or child.process.returncode is not None:
                continue
            child.state = "stopping"
            child.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), self.drain_timeout)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()
            child.state = "stopped"
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


def child_env(overrides: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the children: ours plus ``overrides``."""
    env = dict(os.environ if base is None else base)
    env.update(overrides)
    return env
