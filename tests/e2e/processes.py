"""``cdb service`` processes started one by one by an e2e test, each on ports of its
own, killed at the end."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from cdb.testing.ports import free_port
from cdb.testing.waiting import eventually_async


class Processes:
    """``cdb service`` processes sharing one environment.

    ``start(name)`` runs service ``name``; ``start(name, service="signal", **env)`` runs
    another instance (``name`` is its consumer name, log and key here) with extra
    settings, such as a shard's.
    """

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.ports: dict[str, int] = {}
        self.running: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, service: str | None = None, **extra: str) -> None:
        service = service or name
        port = self.ports.setdefault(name, free_port())
        env = {**self.env, "CDB_CONSUMER": f"{name}-1", f"CDB_PORT_{service.upper()}": str(port),
               **extra}
        with (self.logs / f"{name}.log").open("ab") as log:
            self.running[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cdb", "service", service, env=env, stdout=log,
                stderr=log, stdin=asyncio.subprocess.DEVNULL,
            )

        async def ready() -> bool:
            if self.running[name].returncode is not None:
                raise AssertionError(f"{name} exited: {self.log(name)}")
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    r = await client.get(self.url(name, "/health/ready"))
                return r.status_code == 200
            except httpx.HTTPError:
                return False

        await eventually_async(ready, 30, f"{name} ready")

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    async def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.kill()
        await process.wait()

    async def close(self) -> None:
        for name in list(self.running):
            process = self.running.pop(name)
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 20)
                except TimeoutError:
                    process.kill()
                    await process.wait()
