"""The soak's nemesis: seeded, weighted, overlapping only where allowed, every fault
undone, and written as a scenario the validator accepts."""

from __future__ import annotations

import itertools

import yaml

from cdb.chaos.scenario.validate import validate_text
from cdb.chaos.soak.nemesis import KINDS, SoakSpec, document, kinds_of, schedule, weights_for


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    spec = SoakSpec(duration=600, seed=11, mode="distributed")
    assert schedule(spec) == schedule(SoakSpec(duration=600, seed=11, mode="distributed"))
    assert schedule(spec) != schedule(SoakSpec(duration=600, seed=12, mode="distributed"))


def test_weights_choose_the_kinds_and_zero_leaves_one_out() -> None:
    spec = SoakSpec(duration=3000, seed=1, mode="distributed",
                    weights={"kill": 10, "stop": 0, "network": 0})
    kinds = kinds_of(schedule(spec))
    assert "stop" not in kinds
    assert "network" not in kinds
    assert kinds["kill"] == max(kinds.values())


def test_embedded_draws_only_what_embedded_mode_can_inject() -> None:
    kinds = set(kinds_of(schedule(SoakSpec(duration=3000, seed=2, mode="embedded"))))
    assert kinds
    assert all("embedded" in KINDS[k].modes for k in kinds)
    assert "sabotage:duplicate_fills" not in weights_for(SoakSpec(duration=1))


def test_faults_overlap_only_on_different_parts_and_never_beyond_the_limit() -> None:
    for seed in range(5):
        spec = SoakSpec(duration=1200, seed=seed, mode="distributed", max_overlap=2,
                        mean_gap=2)
        planned = schedule(spec)
        for p in planned:
            active = [q for q in planned if q is not p and q.at <= p.at < q.until]
            assert len(active) < spec.max_overlap
            assert all(not set(q.holds) & set(p.holds) for q in active), (p, active)
    sequential = schedule(SoakSpec(duration=1200, seed=3, mode="distributed", max_overlap=1))
    for a, b in itertools.pairwise(sequential):
        assert b.at >= a.until


def test_every_fault_is_undone_by_a_duration_or_undoes_itself() -> None:
    planned = schedule(SoakSpec(duration=2000, seed=5, mode="distributed"))
    self_undoing = {"kill", "restart", "flash_crash", "gap", "stale", "flat", "signal_flood"}
    for p in planned:
        main = p.entries[0]
        assert "duration" in main or p.kind in self_undoing, p
    # A crash's trip is ended by a reset after the ESS's cooldown.
    crash = next(p for p in planned if p.kind == "flash_crash")
    assert crash.entries[-1]["action"]["type"] == "ess_reset"


def test_the_schedule_is_a_valid_scenario_with_the_history_checks() -> None:
    spec = SoakSpec(duration=300, seed=4, mode="distributed")
    planned = schedule(spec)
    doc = document(spec, planned)
    result = validate_text(yaml.safe_dump(doc), "soak.yaml")
    assert result.scenario is not None, result.problems
    invariants = {i.type for i in result.scenario.invariants}
    assert {"no_lost_events", "no_duplicates", "exposure_within_limit",
            "audit_chain_complete", "lag_recovers"} <= invariants
    if any(p.kind == "flash_crash" for p in planned):
        assert "no_order_after_ess_trip" in invariants
    recovered = {m.name for m in result.scenario.measurements}
    assert recovered == {f"{p.name} recovered" for p in planned if p.recover}


def test_redis_restarted_empty_is_drawn_only_when_asked_for_and_is_a_valid_step() -> None:
    """``redis_empty`` (weight 0 by default) leaves the default schedules as they were;
    asked for, it stops Redis and restarts it with its data deleted."""
    default = SoakSpec(duration=3000, seed=5, mode="distributed")
    assert "redis_empty" not in kinds_of(schedule(default))
    spec = SoakSpec(duration=600, seed=5, mode="distributed", weights={"redis_empty": 50})
    planned = [p for p in schedule(spec) if p.kind == "redis_empty"]
    assert planned
    faults = [e["fault"] for p in planned for e in p.entries]
    assert all(f["type"] == "redis_down" and f["empty"] is True for f in faults)
    assert all(f["mode"] in ("stop", "kill") for f in faults)
    result = validate_text(yaml.safe_dump(document(spec, schedule(spec))), "soak.yaml")
    assert result.scenario is not None, result.problems
