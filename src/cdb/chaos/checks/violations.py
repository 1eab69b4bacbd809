"""How an invariant turns what it found into an assertion: a violation fails; a check that
examined less than it needs is unknown, never pass."""

from __future__ import annotations

from cdb.chaos.checks.context import shortfall
from cdb.chaos.checks.verdict import Assertion
from cdb.chaos.scenario.params import Params

MAX_EVIDENCE = 10
"""Violations kept as an assertion's evidence."""


def result(name: str, problems: list[str], ok_detail: str, *, unknown: str = "",
            examined: dict[str, int] | None = None, needs: dict[str, int] | None = None,
            p: Params | None = None) -> Assertion:
    """A violation fails; otherwise a check that examined less than it needs (its
    defaults, overridden by the scenario's ``requires``) is unknown, never pass."""
    counts = dict(examined or {})
    if problems:
        head = f"{len(problems)} violation(s): " + "; ".join(problems[:3])
        return Assertion(name=name, category="invariant", status="fail", detail=head,
                         evidence=tuple(problems[:MAX_EVIDENCE]), examined=counts)
    if unknown:
        return Assertion(name=name, category="invariant", status="unknown", detail=unknown,
                         examined=counts)
    wanted = {**(needs or {}), **((p.get("requires") if p is not None else None) or {})}
    short = shortfall(counts, wanted)
    if short:
        return Assertion(name=name, category="invariant", status="unknown",
                         detail=f"{short} ({ok_detail})", examined=counts)
    return Assertion(name=name, category="invariant", status="pass", detail=ok_detail,
                     examined=counts)
