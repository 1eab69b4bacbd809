"""Fault-injection switches that make the pipeline break an invariant on purpose.

``sabotage`` drops or duplicates events a service publishes (fills, orders,
signals): a scenario using it must fail with the invariant it breaks named. That is
how the coordinator is shown to say no; no shipped scenario uses it.
"""

from __future__ import annotations

from typing import Any, Final

from cdb.bus.keys import FILLS, ORDERS, SIGNALS
from cdb.chaos.faults.base import Fault
from cdb.chaos.journal import Effect
from cdb.chaos.registry import FAULTS, P
from cdb.chaos.targets.embedded import Rule

BUGS: Final = {
    "drop_fills": (FILLS, "drop"),
    "duplicate_fills": (FILLS, "duplicate"),
    "drop_orders": (ORDERS, "drop"),
    "duplicate_orders": (ORDERS, "duplicate"),
    "drop_signals": (SIGNALS, "drop"),
}


@FAULTS.register("sabotage", summary="a deliberate bug: drop or duplicate events on the bus "
                 "(to prove the coordinator catches it)",
                 params={"bug": P.string("what to break", enum=list(BUGS)),
                         "every": P.integer("affect every n-th event (default 1)", minimum=1)},
                 required=("bug",), modes=("embedded",))
class SabotageFault(Fault):
    async def apply(self) -> Any:
        topic, action = BUGS[self.p.text("bug")]
        self.rule: Rule = self.ctx.target.sabotage().add(
            Rule(topic=topic, action=action, every=self.p.integer("every", 1))  # type: ignore[arg-type]
        )
        return f"{action} every {self.rule.every} event(s) on {topic}"

    async def undo(self) -> Any:
        self.ctx.target.sabotage().remove(self.rule)
        return f"switch off after {self.rule.affected} event(s)"

    async def effect(self) -> Effect:
        affected = self.rule.affected
        return Effect(took_effect=affected > 0 or None,
                      evidence=f"{affected} event(s) on {self.rule.topic} "
                               f"{self.rule.action}{'ped' if self.rule.action == 'drop' else 'd'}")
