"""Shrinking a failing soak: the smallest schedule that still fails the same way.

Delta debugging (Zeller's ddmin) over the schedule's faults: run the same seed with
subsets (halves, then complements, then finer pieces) and keep any subset that still
fails on the same check, until no piece can be taken away. Every trial is a complete
run of a plain scenario, so the result is a file ``cdb scenario run`` reproduces.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

T = TypeVar("T")


class Trial(msgspec.Struct, frozen=True, kw_only=True):
    """One rerun: the faults it kept and whether it still failed on the check."""

    faults: tuple[str, ...]
    failed: bool
    checks: tuple[str, ...]
    """The checks that failed in it."""


def _split(items: list[T], n: int) -> list[list[T]]:
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return [c for c in out if c]


async def ddmin(items: list[T], fails: Callable[[list[T]], Awaitable[bool]],
                max_trials: int = 40) -> list[T]:
    """A 1-minimal failing subset of ``items`` (``fails(items)`` is assumed true).

    Tries the empty schedule first (the failure may need no fault at all), then ddmin;
    stops after ``max_trials`` reruns with the smallest failing subset found so far.
    """
    trials = 0

    async def test(subset: list[T]) -> bool:
        nonlocal trials
        trials += 1
        return await fails(subset)

    if not items or await test([]):
        return []
    current, n = list(items), 2
    while len(current) >= 2 and trials < max_trials:
        chunks = _split(current, n)
        found = await _first_failing(chunks, test, lambda: trials < max_trials)
        if found is not None:
            current, n = found, 2
            continue
        if n > 2:
            rests = [[x for x in current if x not in chunk] for chunk in chunks]
            found = await _first_failing(rests, test, lambda: trials < max_trials)
            if found is not None:
                current, n = found, max(n - 1, 2)
                continue
        if n >= len(current):
            break
        n = min(n * 2, len(current))
    return current


async def _first_failing(candidates: list[list[T]], test: Callable[[list[T]], Awaitable[bool]],
                         budget: Callable[[], bool]) -> list[T] | None:
    for candidate in candidates:
        if not budget():
            return None
        if await test(candidate):
            return candidate
    return None
