"""``cdb scenario soak``: its ``KIND=NUMBER`` options and its result for people."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def print_soak(out: Console, result: Any) -> None:
    """The soak's verdict, faults, recoveries, leaks and reports, for people."""
    out.print(f"soak verdict {result.status} (exit {result.exit_code}): seed "
             f"{result.seed}, {result.mode}, {result.faults} fault(s) "
             f"{result.faults_by_kind}, {result.wall_s:.1f}s", highlight=False,
             markup=False)
    for reason in result.reasons:
        out.print(f"  - {reason}", highlight=False, markup=False, soft_wrap=True)
    for r in result.recovery:
        if r.measured:
            out.print(f"  recovery {r.kind}: p50 {r.p50_s:g}s p99 {r.p99_s:g}s "
                      f"({r.measured} of {r.faults})", highlight=False, markup=False)
    for s in result.series:
        if s.flagged:
            what = "leak" if s.decides else "growing (a note, not judged)"
            out.print(f"  {what}: {s.subject} {s.metric} +{s.growth:.0f} over the second "
                      "half", highlight=False, markup=False)
    if result.shrunk is not None:
        sh = result.shrunk
        out.print(f"  shrunk: {sh.check} fails with {len(sh.faults)} fault(s) "
                  f"({', '.join(sh.faults) or 'none'}): {sh.file}"
                  f"{'' if sh.reproduced else ' (did not reproduce)'}",
                  highlight=False, markup=False)
    for kind, path in result.reports.items():
        out.print(f"  {kind:<8} {path}", highlight=False, markup=False)


def pairs(option: str, items: list[str]) -> dict[str, float]:
    """``--weight kill=3`` (repeatable) as {kind: weight}."""
    from cdb.errors import CdbError

    out: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise CdbError(f"{option}: {item!r} is not NAME=NUMBER (e.g. kill=3)") from None
    return out
