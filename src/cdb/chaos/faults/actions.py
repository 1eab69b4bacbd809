"""Actions: things a scenario does that are not faults (no undo, no effect check).

``ess_trip`` and ``ess_reset`` drive the emergency stop through its API;
``wait`` holds the method's sequence; Chaos Toolkit's ``http``, ``process`` and
``python`` providers are registered with the probes.
"""

from __future__ import annotations

from typing import Any

from cdb.chaos.faults.base import StepContext
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.registry import ACTIONS, P

_ESS = {"reason": P.string("why (recorded with the change)"),
        "actor": P.string("who (default cdb-scenario)")}


class ActionFailed(Exception):
    """An action did not do what the scenario says it does (a failing assertion)."""


async def _state(ctx: StepContext) -> str:
    return str((await ctx.target.ess()).get("state", "?"))


@ACTIONS.register("ess_trip", summary="trip the emergency stop by hand (fails unless the ESS "
                  "is HALTED afterwards)", params=_ESS)
async def ess_trip(ctx: StepContext, p: Params) -> Any:
    result = await ctx.target.ess_command("trip", p.text("reason", "scenario"),
                                          p.text("actor", "cdb-scenario"))
    state = await _state(ctx)
    if state != "HALTED":
        raise ActionFailed(f"tripped, but risk's ESS is {state}: {result!r}")
    return result


@ACTIONS.register("ess_reset", summary="reset the emergency stop; `expect: refused` (with the "
                  "reason, such as cooldown) when it must be refused. Fails when the outcome "
                  "differs, or when a reset said to be done did not reach risk",
                  params={**_ESS, "expect": P.string("applied (default) or refused",
                                                     enum=["applied", "refused"]),
                          "because": P.string("the reason a refusal must give (cooldown, "
                                              "not_halted, ...)")})
async def ess_reset(ctx: StepContext, p: Params) -> Any:
    result = await ctx.target.ess_command("reset", p.text("reason", "scenario"),
                                          p.text("actor", "cdb-scenario"))
    refused = result.get("refused")
    state = await _state(ctx)
    if p.text("expect", "applied") == "refused":
        because = p.get("because")
        if not refused:
            raise ActionFailed(f"the reset was not refused (ESS {state}): {result!r}")
        if because is not None and refused != because:
            raise ActionFailed(f"the reset was refused for {refused!r}, not {because!r}: "
                               f"{result.get('detail', '')}")
        if state != "HALTED":
            raise ActionFailed(f"the reset was refused ({refused}) but the ESS is {state}")
        return result
    if refused or not result.get("changed"):
        raise ActionFailed(f"the reset was refused ({refused}): {result.get('detail', '')}")
    if state != "ACTIVE":
        # Answered as done: it must have reached risk, whose ESS says so.
        raise ActionFailed(f"the reset was answered as done but risk's ESS is still {state}")
    return result


@ACTIONS.register("wait", summary="do nothing for a while (scenario time)",
                  params={"duration": P.duration()}, required=("duration",))
async def wait(ctx: StepContext, p: Params) -> Any:
    await ctx.clock.sleep_until(ctx.clock.now() + p.duration("duration"))
    return f"waited {p.duration('duration'):g}s"
