"""The timeline as a plan: every step at its absolute offset, in the order it runs.

Entries are written with offsets, durations, parallel groups (children offset from
the group's start) and repetitions; ``expand`` flattens them into ``Step``s sorted
by start time, ties kept in file order, so what runs first is what the file says.
``resolve`` turns a reference (``crash``, ``crash.end``, ``crash#2``, seconds) into a
time on the same axis. Pure functions: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from cdb.chaos.scenario.model import Provider, TimelineEntry, TimeRef

StepKind = Literal["fault", "action", "probe"]


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One thing to do at one time.

    ``key`` is unique (``name`` plus ``#n`` for the n-th repetition); ``order`` is the
    position in the file, which breaks ties between steps at the same time.
    """

    key: str
    name: str
    kind: StepKind
    at: float
    duration: float | None
    provider: Provider
    path: str
    repetition: int = 1
    order: int = 0
    tolerance: Any = None
    group: str = ""

    @property
    def end(self) -> float:
        return self.at + (self.duration or 0.0)


class TimelineError(ValueError):
    """A reference that names no step."""


def _leaf(entry: TimelineEntry) -> tuple[StepKind, Provider] | None:
    if entry.fault is not None:
        return "fault", entry.fault
    if entry.action is not None:
        return "action", entry.action
    if entry.probe is not None:
        return "probe", entry.probe
    return None


def expand(entries: Iterable[TimelineEntry]) -> list[Step]:
    """Flatten groups and repetitions into steps sorted by (start, file order)."""
    steps: list[Step] = []
    counter = [0]
    seen: dict[str, int] = {}

    def visit(entry: TimelineEntry, base: float, group: str, suffix: str) -> None:
        times = entry.repeat.times if entry.repeat else 1
        every = entry.repeat.every if entry.repeat else 0.0
        order = counter[0]
        counter[0] += 1
        for n in range(times):
            start = base + entry.at + n * every
            rep = f"{suffix}#{n + 1}" if times > 1 else suffix
            leaf = _leaf(entry)
            if leaf is None:
                for child in entry.parallel:
                    visit(child, start, entry.name, rep)
                continue
            kind, provider = leaf
            name = entry.name
            seen[name] = seen.get(name, 0) + 1
            key = f"{name}{rep}" if rep else name
            steps.append(Step(
                key=key, name=name, kind=kind, at=round(start, 9), duration=entry.duration,
                provider=provider, path=entry.path, repetition=seen[name], order=order,
                tolerance=entry.tolerance, group=group,
            ))

    for entry in entries:
        visit(entry, 0.0, "", "")
    steps.sort(key=lambda s: (s.at, s.order, s.repetition))
    return steps


def end_of(steps: Iterable[Step]) -> float:
    """When the last step ends (start plus duration)."""
    return max((s.end for s in steps), default=0.0)


def names(entries: Iterable[TimelineEntry]) -> list[tuple[str, str]]:
    """(name, path) of every entry and group, in file order."""
    out: list[tuple[str, str]] = []
    for entry in entries:
        out.append((entry.name, entry.path))
        out.extend(names(entry.parallel))
    return out


def resolve(ref: TimeRef, steps: list[Step], ended: dict[str, float] | None = None) -> float:
    """The time of ``ref``: seconds as given; ``name`` the start of the first step (or
    group) of that name; ``name#k`` its k-th repetition; ``.end`` its end.

    Args:
        ref: the reference.
        steps: the expanded timeline.
        ended: actual end times by step key, when the run knows them (an undo that ran
            late); planned ends otherwise.

    Raises:
        TimelineError: no step of that name.
    """
    if isinstance(ref, int | float):
        return float(ref)
    text = ref
    want_end = text.endswith(".end")
    if want_end:
        text = text[: -len(".end")]
    name, _, rep = text.partition("#")
    k = int(rep) if rep.isdigit() else 1
    matching = [s for s in steps if s.name == name]
    if matching:
        chosen = sorted(matching, key=lambda s: (s.at, s.order))
        if k > len(chosen):
            raise TimelineError(f"{ref!r}: step {name!r} runs {len(chosen)} times, not {k}")
        step = chosen[k - 1]
        if want_end:
            return (ended or {}).get(step.key, step.end)
        return step.at
    members = [s for s in steps if s.group == name]
    if members:
        if want_end:
            return max((ended or {}).get(s.key, s.end) for s in members)
        return min(s.at for s in members)
    raise TimelineError(f"{ref!r} names no timeline step")
