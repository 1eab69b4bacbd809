"""The timeline as a plan: offsets, parallel groups, repetitions, references."""

from __future__ import annotations

import pytest

from cdb.chaos.scenario.model import Provider, Repeat, TimelineEntry
from cdb.chaos.scenario.timeline import TimelineError, end_of, expand, resolve


def fault(name: str, at: float, duration: float | None = None, **kw: object) -> TimelineEntry:
    return TimelineEntry(name=name, at=at, path=f"$.{name}", duration=duration,
                         fault=Provider(type="stop", params={}), **kw)  # type: ignore[arg-type]


def test_steps_are_ordered_by_time_then_file_order() -> None:
    steps = expand([fault("late", 5), fault("first", 1), fault("tie-a", 3), fault("tie-b", 3)])
    assert [s.key for s in steps] == ["first", "tie-a", "tie-b", "late"]


def test_parallel_children_are_offset_from_their_group_and_repeated() -> None:
    group = TimelineEntry(name="g", at=10, path="$.g", repeat=Repeat(times=3, every=20),
                          parallel=(fault("x", 0, 2), fault("y", 1)))
    steps = expand([group, fault("z", 15)])
    assert [(s.key, s.at) for s in steps] == [
        ("x#1", 10), ("y#1", 11), ("z", 15), ("x#2", 30), ("y#2", 31), ("x#3", 50),
        ("y#3", 51)]
    assert all(s.group == "g" for s in steps if s.name != "z")
    assert end_of(steps) == 52


def test_references_resolve_to_starts_ends_and_repetitions() -> None:
    steps = expand([fault("a", 2, 3), TimelineEntry(name="r", at=10, path="$.r",
                                                    repeat=Repeat(times=2, every=5),
                                                    fault=Provider(type="stop", params={}),
                                                    duration=1)])
    assert resolve("a", steps) == 2
    assert resolve("a.end", steps) == 5
    assert resolve("a.end", steps, {"a": 7.5}) == 7.5
    assert resolve("r#2", steps) == 15
    assert resolve("r#2.end", steps) == 16
    assert resolve(4.5, steps) == 4.5
    with pytest.raises(TimelineError, match="names no timeline step"):
        resolve("nope", steps)
    with pytest.raises(TimelineError, match="runs 2 times"):
        resolve("r#3", steps)


def test_a_group_name_refers_to_its_first_start_and_last_end() -> None:
    group = TimelineEntry(name="g", at=1, path="$.g", parallel=(fault("x", 0, 2),
                                                               fault("y", 1, 5)))
    steps = expand([group])
    assert resolve("g", steps) == 1
    assert resolve("g.end", steps) == 7
