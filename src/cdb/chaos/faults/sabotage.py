"""Fault-injection switches that make the pipeline break a check on purpose.

Each bug breaks one check of the coordinator (the must-fail self-tests in
``tests/e2e/scenarios`` show each one failing on exactly its check, with the evidence
named); no shipped scenario uses them:

==================  ====================================================  =========================
bug                 what the pipeline then does                           the check that must fail
==================  ====================================================  =========================
drop_fills          execution's fills never reach the bus                 no_lost_events
drop_trades         ws's trades are lost from now on, to the end          no_lost_events (tail)
duplicate_fills     every fill is published twice under two ids           no_duplicates
duplicate_orders    every order is published twice under two ids          no_duplicates
drop_signals        signals never reach risk                              (expectations)
ignore_ess          risk sends an order where the ESS made it reject      no_order_after_ess_trip
inflate_orders      risk's orders go out ten times their size             exposure_within_limit
unchain_fills       fills lose their link to their order                  audit_chain_complete
poison_signals      signals no service can handle (dead-lettered)         no_dead_letters
stall_risk          risk stops reading, to the end of the run             lag_recovers, recover
lose_resets         an ESS reset is answered as done, never applied       the ess_reset action
leak_tasks          execution leaves a task and 64 KiB behind per fill    the soak's leak check
==================  ====================================================  =========================
"""

from __future__ import annotations

from typing import Any, Final

from cdb.bus.keys import FILLS, MARKET_DATA, ORDERS, RISK_EVENTS, SIGNALS
from cdb.chaos.faults.base import ScenarioFault
from cdb.chaos.history.recording import Effect
from cdb.chaos.scenario.registry import FAULTS, P
from cdb.chaos.targets.embedded import Rule

BUGS: Final[dict[str, dict[str, Any]]] = {
    "drop_fills": {"topic": FILLS, "action": "drop", "only": "fill"},
    "drop_trades": {"topic": MARKET_DATA, "action": "drop", "lasting": True},
    "duplicate_fills": {"topic": FILLS, "action": "duplicate", "only": "fill"},
    "duplicate_orders": {"topic": ORDERS, "action": "duplicate", "only": "order"},
    "drop_signals": {"topic": SIGNALS, "action": "drop"},
    "ignore_ess": {"topic": RISK_EVENTS, "action": "ignore_ess", "only": "risk_decision"},
    "inflate_orders": {"topic": ORDERS, "action": "inflate", "only": "order"},
    "unchain_fills": {"topic": FILLS, "action": "unchain", "only": "fill"},
    "poison_signals": {"topic": SIGNALS, "action": "poison", "only": "signal"},
    "leak_tasks": {"topic": FILLS, "action": "leak", "only": "fill", "lasting": True,
                   "owner": "execution"},
    "stall_risk": {},
    "lose_resets": {},
}


@FAULTS.register("sabotage", summary="a deliberate bug that breaks one check (to prove the "
                 "coordinator catches it): drop, duplicate, inflate or unchain events, an "
                 "order while HALTED, a poisoned signal, a stalled consumer, a lost reset",
                 params={"bug": P.string("what to break", enum=list(BUGS)),
                         "every": P.integer("affect every n-th event (default 1)", minimum=1),
                         "factor": P.integer("inflate_orders: by how much (default 10)",
                                             minimum=2)},
                 required=("bug",), modes=("embedded",))
class SabotageFault(ScenarioFault):
    async def apply(self) -> Any:
        bug = self.p.text("bug")
        switches = self.ctx.target.sabotage()
        self.rule: Rule | None = None
        if bug == "stall_risk":
            switches.stalled.add("risk")
            self.behind = 0
            return "risk stops reading (for good)"
        if bug == "lose_resets":
            switches.lose_resets = True
            return "ESS resets are answered and dropped"
        spec = BUGS[bug]
        self.rule = switches.add(Rule(every=self.p.integer("every", 1),
                                      factor=self.p.integer("factor", 10), **spec))
        return f"{self.rule.action} every {self.rule.every} event(s) on {self.rule.topic}"

    async def undo(self) -> Any:
        switches = self.ctx.target.sabotage()
        if self.rule is None:
            if self.p.text("bug") == "lose_resets":
                switches.lose_resets = False
                return "resets reach risk again"
            return "risk left stalled: a stuck consumer does not recover by itself"
        switches.remove(self.rule)
        lasting = " (the bug lasts to the end)" if self.rule.lasting else ""
        return f"switch off after {self.rule.affected} event(s){lasting}"

    async def effect(self) -> Effect:
        bug = self.p.text("bug")
        if bug == "stall_risk":
            lag = await self.ctx.target.lag()
            behind = sum(groups.get("risk", 0) for groups in lag.values())
            return Effect(took_effect=behind > 0 or None,
                          evidence=f"risk is {behind} event(s) behind")
        if self.rule is None:
            return Effect(took_effect=True, evidence="resets are lost from now on")
        affected = self.rule.affected
        return Effect(took_effect=affected > 0 or None,
                      evidence=f"{affected} event(s) on {self.rule.topic}: {self.rule.action} "
                               f"(last {self.rule.last_id or 'none'})")
