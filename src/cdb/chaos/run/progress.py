"""Live progress and the final summary of a run, with rich.

While a run goes on: the phase, a bar of scenario time, the step in hand, the faults
in force, the last value of every probe and what flowed on the bus. At the end: each
assertion with its result, the measured times, the seed and where the reports are.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cdb.chaos.checks.verdict import Assertion
from cdb.chaos.reports.record import Outcome

_STYLE = {"pass": "bold green", "fail": "bold red", "unknown": "bold yellow"}


def _bar(t: float, start: float, end: float, width: int = 40) -> str:
    span = max(end - start, 1e-9)
    done = min(max((t - start) / span, 0.0), 1.0)
    full = int(done * width)
    return "█" * full + "░" * (width - full)


def _label(name: str) -> str:
    """Built-in samples (``__health__``) shown as ``[health]``, apart from the scenario's."""
    return f"[{name.strip('_')}]" if name.startswith("__") else name


def _short(value: Any) -> str:
    if isinstance(value, dict):
        if "status" in value:
            return str(value["status"])
        if "state" in value:
            return str(value["state"])
        if "total" in value:
            return str(value["total"])
    text = str(value)
    return text if len(text) < 40 else text[:37] + "..."


class LiveProgress:
    """A ``ProgressSink`` that draws on a rich console (a log only when not a terminal).

    Use as a context manager around the run.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._state: dict[str, Any] = {}
        self._live = Live(console=console, refresh_per_second=5, transient=True,
                          auto_refresh=console.is_terminal)

    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.console.is_terminal:
            self._live.__exit__(None, None, None)

    def log(self, text: str) -> None:
        self.console.print(Text(text, style="dim"), highlight=False)

    def update(self, state: dict[str, Any]) -> None:
        self._state = state
        if self.console.is_terminal:
            self._live.update(self._render())

    def _render(self) -> Group:
        s = self._state
        t, start, end = s.get("t", 0.0), -s.get("warmup", 0.0), s.get("t_total", 0.0)
        head = Table.grid(padding=(0, 1))
        head.add_row(Text(s.get("title", ""), style="bold"),
                     Text(f"[{s.get('mode', '')}] {s.get('phase', '')}", style="cyan"))
        head.add_row(Text(_bar(t, start, end)),
                     Text(f"t={t:7.2f}s of {end:g}s" if t != float("-inf") else ""))
        if s.get("current"):
            head.add_row(Text("step"), Text(s["current"]))
        active = s.get("active") or {}
        head.add_row(Text("faults on"), Text(", ".join(f"{k} ({v})" for k, v in active.items())
                                             or "none", style="red" if active else "green"))
        counts = s.get("counts") or {}
        head.add_row(Text("bus"), Text(
            f"{s.get('trades', 0):,} trades  " + "  ".join(f"{n} {k}" for k, n in counts.items()
                                                         if n)))
        samples = s.get("samples") or {}
        if samples:
            head.add_row(Text("probes"), Text("  ".join(
                f"{_label(k)}={_short(v)}" for k, v in samples.items())))
        return Group(head)


def summary_table(outcome: Outcome, title: str) -> Table:
    """Each assertion with its result and measured time."""
    # Names and details come from the scenario file and the run: Text, never markup
    # (a "[/]" in a step name must not crash the summary, "[blink]" must not blink).
    table = Table(title=Text(f"{title}: {outcome.verdict.status.upper()}"),
                  title_justify="left", title_style=_STYLE[outcome.verdict.status])
    for col in ("result", "category", "assertion", "measured", "detail"):
        table.add_column(col, overflow="fold")
    for a in outcome.assertions:
        table.add_row(Text(a.status, style=_STYLE[a.status]), Text(a.category), Text(a.name),
                      Text(_measured(a)), Text(a.detail))
    return table


def _measured(a: Assertion) -> str:
    if a.measured is None:
        return ""
    bound = f" (max {a.bound:g}s)" if a.bound is not None else ""
    return f"{a.measured:g}s{bound}"


def print_summary(console: Console, outcome: Outcome, title: str) -> None:
    console.print(summary_table(outcome, title))
    times = [a for a in outcome.assertions if a.measured is not None]
    if times:
        console.print("measured: " + ", ".join(f"{a.name} {a.measured:g}s" for a in times),
                      markup=False)
    for reason in outcome.verdict.reasons:
        console.print(f"  - {reason}", style=_STYLE[outcome.verdict.status], highlight=False,
                      markup=False)
    console.print(Text.assemble(
        "verdict ", (outcome.verdict.status, _STYLE[outcome.verdict.status]),
        f" (exit {outcome.verdict.exit_code}), seed {outcome.seed}, mode {outcome.mode}, "
        f"namespace {outcome.namespace}, {outcome.duration_s:.1f}s"))
    for kind, path in outcome.reports.items():
        console.print(f"  {kind:<5} {path}", highlight=False, markup=False)
