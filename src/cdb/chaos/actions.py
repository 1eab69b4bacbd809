"""Actions: things a scenario does that are not faults (no undo, no effect check).

``ess_trip`` and ``ess_reset`` drive the emergency stop through its API (issue 5);
``wait`` holds the method's sequence; Chaos Toolkit's ``http``, ``process`` and
``python`` providers are registered with the probes.
"""

from __future__ import annotations

from typing import Any

from cdb.chaos.faults.base import Params, StepContext
from cdb.chaos.registry import ACTIONS, P

_ESS = {"reason": P.string("why (recorded with the change)"),
        "actor": P.string("who (default cdb-scenario)")}


@ACTIONS.register("ess_trip", summary="trip the emergency stop by hand", params=_ESS,
                  requires=("ess",))
async def ess_trip(ctx: StepContext, p: Params) -> Any:
    return await ctx.target.ess_command("trip", p.text("reason", "scenario"),
                                        p.text("actor", "cdb-scenario"))


@ACTIONS.register("ess_reset", summary="reset the emergency stop (refused during its "
                  "cooldown)", params=_ESS, requires=("ess",))
async def ess_reset(ctx: StepContext, p: Params) -> Any:
    return await ctx.target.ess_command("reset", p.text("reason", "scenario"),
                                        p.text("actor", "cdb-scenario"))


@ACTIONS.register("wait", summary="do nothing for a while (scenario time)",
                  params={"duration": P.duration()}, required=("duration",))
async def wait(ctx: StepContext, p: Params) -> Any:
    await ctx.clock.sleep_until(ctx.clock.now() + p.duration("duration"))
    return f"waited {p.duration('duration'):g}s"
