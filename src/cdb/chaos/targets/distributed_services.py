"""The five ``cdb service`` processes of a distributed run, each under its own supervisor.

Each service runs under its own ``Supervisor`` (so each can have its own environment:
its API port, and its own proxied links when the scenario injects network faults),
restarted when it dies as in production, and killed with the coordinator should it
die without cleaning up. Their HTTP APIs are how the coordinator observes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from typing import Any

import httpx

from cdb.bus.keys import SERVICES
from cdb.chaos.scenario.registry import Unavailable
from cdb.chaos.targets.base import Plan
from cdb.chaos.targets.distributed_servers import ServersTarget
from cdb.runtime.supervisor import Supervisor, child_env
from cdb.testing.ports import restartable_port

_READY_TIMEOUT_S = 90.0


class ServicesTarget(ServersTarget):
    """A target whose services are processes this run launches."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.log_dir = plan.report_dir / "logs"
        self.supervisors: dict[str, Supervisor] = {}
        # Restartable: a killed service comes back on the same port.
        self.ports = {name: restartable_port() for name in self.services}
        self.token = uuid.uuid4().hex
        self._frozen: set[str] = set()
        """Services this run froze (SIGSTOP): nothing is asked of them until continued."""

    async def _launch(self, service: str, base: dict[str, str]) -> None:
        env = child_env({**base, **self._service_env(service)})
        # SIGKILL, not SIGTERM, when the coordinator dies: a service the scenario
        # paused (SIGSTOP) would never act on a SIGTERM.
        sup = Supervisor(env, self.log_dir, services=(service,), drain_timeout=10.0,
                         max_backoff=2.0, parent_death_signal=signal.SIGKILL)
        await sup.start()
        self.supervisors[service] = sup

    def _speed(self) -> str:
        speed = self.plan.scenario.pipeline.market.speed
        return "realtime" if speed is None or speed == 1.0 else str(speed)

    def _service_env(self, service: str) -> dict[str, str]:
        env = {"CDB_CONSUMER": self.instance_of(service),
               "REDIS_PORT": str(self.redis_at.port), "POSTGRES_PORT": str(self.pg_at.port)}
        for (s, dep), (_, listen) in self._links_made.items():
            if s == service:
                host, _, port = listen.rpartition(":")
                env[f"{dep.upper()}_HOST"] = host
                env[f"{dep.upper()}_PORT"] = port
        return env

    async def _wait_ready(self, services: set[str]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        waiting = set(services)
        while waiting:
            for service in list(waiting):
                try:
                    r = await self._http.get(self._url(service, "/health/ready"))
                    if r.status_code == 200:
                        waiting.discard(service)
                except httpx.HTTPError:
                    pass
            if not waiting:
                return
            if time.monotonic() > deadline:
                logs = {s: self._log_tail(s) for s in waiting}
                raise RuntimeError(f"services not ready after {_READY_TIMEOUT_S:g}s: "
                                   f"{', '.join(sorted(waiting))}; logs: {logs}")
            await asyncio.sleep(0.2)

    def _log_tail(self, service: str, chars: int = 1500) -> str:
        path = self.log_dir / f"{service}.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def _url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    async def _stop_services(self) -> None:
        for service in SERVICES:
            sup = self.supervisors.get(service)
            if sup is None:
                continue
            # A paused (SIGSTOPped) service would never drain.
            pid = sup.pid(service)
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(Exception):
                await sup.stop()

    async def health(self, service: str) -> dict[str, Any]:
        if service not in self.ports:
            raise Unavailable(f"service {service!r} is not running in this pipeline")
        try:
            r = await self._http.get(self._url(service, "/health"), timeout=1.0)
            body: dict[str, Any] = r.json()
            return body
        except (httpx.HTTPError, ValueError) as exc:
            return {"service": service, "status": "unreachable",
                    "error": f"{type(exc).__name__}: {exc}"}

    async def metrics_text(self, service: str) -> str:
        r = await self._http.get(self._url(service, "/metrics"), timeout=2.0)
        r.raise_for_status()
        return r.text

    async def ess(self) -> dict[str, Any]:
        if "risk" not in self.ports:
            raise Unavailable("no risk service in this pipeline")
        try:
            r = await self._http.get(self._url("risk", "/ess"), timeout=2.0)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"GET /ess: {exc!r}") from exc
        if r.status_code == 404:
            raise Unavailable("the risk service has no /ess API")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    async def ess_command(self, command: str, reason: str, actor: str) -> dict[str, Any]:
        r = await self._http.post(self._url("risk", f"/ess/{command}"),
                                  json={"actor": actor, "reason": reason},
                                  headers={"Authorization": f"Bearer {self.token}"},
                                  timeout=5.0)
        if r.status_code == 404:
            raise Unavailable("the risk service has no /ess API")
        body: dict[str, Any] = r.json()
        if r.status_code == 409:
            return {"changed": False, "refused": body.get("error"), **body}
        r.raise_for_status()
        return body

    def service_pid(self, service: str) -> int | None:
        sup = self.supervisors.get(service)
        return sup.pid(service) if sup else None

    def _pid(self, service: str) -> int:
        pid = self.service_pid(service)
        if pid is None:
            raise Unavailable(f"service {service!r} has no process")
        return pid

    async def wait_service_back(self, service: str, since_pid: int | None,
                                timeout: float) -> str:
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            pid = self.service_pid(service)
            if pid is not None and pid != since_pid:
                try:
                    r = await self._http.get(self._url(service, "/health/ready"), timeout=1.0)
                    if r.status_code == 200:
                        return (f"{service} back as pid {pid} after "
                                f"{time.monotonic() - started:.2f}s")
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{service} not back within {timeout:g}s:\n{self._log_tail(service)}")
