"""``cdb up``: the five services as local processes, restarted when they crash.

Each service runs as ``python -m cdb service NAME`` with the environment given; a
process that exits unexpectedly is restarted after an exponential backoff (1 s
doubling to 30 s, reset once it has stayed up for a minute); each child is told its restart count
(``CDB_RESTARTS``) and advertises it in discovery. Stopping sends SIGTERM
upstream first (ws, signal, risk, execution, db_writer) so each stage drains what
the one before it published, then SIGKILLs whatever outlives the drain timeout.

The children die with the supervisor: each runs in a session of its own (a Ctrl-C
meant for the supervisor does not reach it out of order), and on Linux it is sent
``parent_death_signal`` when the supervisor's process ends in any way, SIGKILL
included (``PR_SET_PDEATHSIG``), so a killed ``cdb up`` or scenario run leaves no
orphaned service behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cdb.bus.keys import SERVICES

STARTUP_ORDER = ("db_writer", "execution", "risk", "signal", "ws")
"""Consumers first, so their groups exist before the first trade is published."""
_PR_SET_PDEATHSIG = 1
RESTARTS_ENV = "CDB_RESTARTS"
"""Set for each child: how many times it was restarted (Settings.cdb_restarts)."""


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent ``sig`` when this process ends (Linux;
    None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:  # runs in the child, between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took hold
            os.kill(os.getpid(), sig)

    return preexec


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
        parent_death_signal: what a child gets when this process dies without stopping
            it (SIGTERM drains; SIGKILL also ends a paused child); None: nothing.
    """

    def __init__(
        self, env: dict[str, str], log_dir: Path, services: tuple[str, ...] = SERVICES,
        drain_timeout: float = 15.0, max_backoff: float = 30.0,
        parent_death_signal: int | None = signal.SIGTERM,
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children = {name: Child(name) for name in services}
        self.drain_timeout = drain_timeout
        self.max_backoff = max_backoff
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self._preexec = (die_with_parent(parent_death_signal)
                         if parent_death_signal is not None else None)

    async def _spawn(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{child.name}.log").open("ab")
        try:
            child.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cdb", "service", child.name,
                # The count is the child's to report (its discovery record): the console
                # and `cdb status` read it there, whoever supervises.
                env={**self.env, RESTARTS_ENV: str(child.restarts)},
                stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
                # The preexec is one prctl: safe between fork and exec.
                start_new_session=True, preexec_fn=self._preexec,
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
