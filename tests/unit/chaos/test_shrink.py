"""Delta debugging finds a smallest failing subset, within its budget of reruns."""

from __future__ import annotations

from cdb.chaos.soak.shrink import ddmin


async def test_the_one_culprit_is_found_among_many() -> None:
    runs: list[list[int]] = []

    async def fails(subset: list[int]) -> bool:
        runs.append(subset)
        return 13 in subset

    assert await ddmin(list(range(40)), fails) == [13]
    assert runs[0] == []  # the empty schedule first: maybe no fault is needed
    assert len(runs) <= 20


async def test_two_faults_that_fail_only_together_are_both_kept() -> None:
    async def fails(subset: list[int]) -> bool:
        return 3 in subset and 17 in subset

    assert sorted(await ddmin(list(range(20)), fails, max_trials=100)) == [3, 17]


async def test_a_failure_without_faults_shrinks_to_nothing() -> None:
    async def fails(subset: list[int]) -> bool:
        return True

    assert await ddmin([1, 2, 3], fails) == []


async def test_the_budget_bounds_the_reruns() -> None:
    calls = 0

    async def fails(subset: list[int]) -> bool:
        nonlocal calls
        calls += 1
        return 5 in subset

    found = await ddmin(list(range(64)), fails, max_trials=3)
    assert calls <= 3
    assert 5 in found
