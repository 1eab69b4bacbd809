"""Faults on service processes: stop/continue, kill, restart.

In distributed mode these are OS signals to the service's process (SIGSTOP/SIGCONT,
SIGKILL, SIGTERM); the supervisor restarts a process that exits, as it would in
production, so ``kill`` and ``restart`` are undone by waiting until the service is
back and ready. In embedded mode ``stop`` stops the service's consumption (its
consumer group falls behind); there are no processes to kill.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from cdb.bus.keys import SERVICES
from cdb.chaos.faults.base import ScenarioFault
from cdb.chaos.history.recording import Effect
from cdb.chaos.scenario.registry import FAULTS, P

_SERVICE = P.string("ws, signal, risk, execution or db_writer",
                    enum=list(SERVICES))


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (``T`` stopped, ``Z`` zombie); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


@FAULTS.register("stop", summary="freeze a service (SIGSTOP; SIGCONT on undo). Embedded: "
                 "its consumption stops", params={"service": _SERVICE}, required=("service",))
class StopService(ScenarioFault):
    effect_after = 1.0  # without a duration: long enough for events to pile up

    async def apply(self) -> Any:
        service = self.p.text("service")
        self.pid = self.ctx.target.service_pid(service)
        evidence = await self.ctx.target.pause_service(service)
        self.evidence.append(evidence)
        return evidence

    async def undo(self) -> Any:
        return await self.ctx.target.resume_service(self.p.text("service"))

    async def effect(self) -> Effect:
        service = self.p.text("service")
        if self.ctx.mode == "distributed":
            state = process_state(self.pid) if self.pid else None
            if state == "T":
                return Effect(took_effect=True, evidence=f"pid {self.pid} is stopped (T)")
            return Effect(took_effect=False, evidence=f"pid {self.pid} state is {state}")
        lag = await self.ctx.target.lag()
        behind = sum(groups.get(service, 0) for groups in lag.values())
        if behind > 0:
            return Effect(took_effect=True, evidence=f"{service} fell {behind} events behind")
        return Effect(took_effect=None, evidence=f"{service} was paused but nothing arrived "
                                                 "for it to hold back")


@FAULTS.register("kill", summary="SIGKILL a service process; the supervisor restarts it "
                 "(undo waits until it is back and ready)",
                 params={"service": _SERVICE,
                         "back_within": P.duration("how long the undo waits for the restart "
                                                   "(default 60s)"),
                         "hold": P.duration("freeze the process (SIGSTOP) this long first, "
                                            "so events are in flight when it dies")},
                 required=("service",), modes=("distributed",))
class KillService(ScenarioFault):
    signame = "SIGKILL"
    in_flight: int | None = None
    """Events its group owed just before the signal (None: not applied, or unknown)."""

    async def apply(self) -> Any:
        service = self.p.text("service")
        self.pid = self.ctx.target.service_pid(service)
        hold = self.p.duration("hold", 0.0)
        if hold:
            self.evidence.append(await self.ctx.target.pause_service(service))
            await self.ctx.clock.sleep_until(self.ctx.clock.now() + hold)
        self.in_flight = await self._owed(service)
        evidence = await self.ctx.target.signal_service(service, self.signame)
        self.evidence.append(evidence)
        self.applied_wall = time.monotonic()
        return evidence + (f" holding or owed {self.in_flight} event(s)"
                           if self.in_flight is not None else "")

    async def _owed(self, service: str) -> int | None:
        """Events the service's consumer group had read without acknowledging or not yet
        read, just before the signal: what its successor must take up (None: unknown)."""
        try:
            lag = await self.ctx.target.lag()
        except Exception:
            return None
        return sum(groups.get(service, 0) for groups in lag.values())

    async def undo(self) -> Any:
        timeout = self.p.duration("back_within", 60.0)
        return await self.ctx.target.wait_service_back(self.p.text("service"), self.pid, timeout)

    async def effect(self) -> Effect:
        # The process must be gone (a new one may already run in its place).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = process_state(self.pid) if self.pid else None
            if state in (None, "Z"):
                owed = self.in_flight
                return Effect(took_effect=True,
                              evidence=f"pid {self.pid} exited after {self.signame}"
                                       + (f", {owed} event(s) in flight" if owed is not None
                                          else ""),
                              counts={"in_flight": owed} if owed is not None else {})
            await asyncio.sleep(0.05)
        return Effect(took_effect=False, evidence=f"pid {self.pid} still runs 10 s after "
                                                  f"{self.signame}")


@FAULTS.register("restart", summary="SIGTERM a service (it drains and exits); the "
                 "supervisor starts it again (undo waits until it is ready)",
                 params={"service": _SERVICE, "back_within": P.duration()},
                 required=("service",), modes=("distributed",))
class RestartService(KillService):
    signame = "SIGTERM"
