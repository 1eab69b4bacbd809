"""Fuzz of the scenario loader and validator: any text gives a ``Result``, never an
exception, in bounded time; a scenario that validates has a bounded timeline."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdb.chaos.scenario.timeline import expand
from cdb.chaos.scenario.validate import MAX_STEPS, Result, validate_text

SHIPPED = sorted((Path(__file__).resolve().parents[3] / "scenarios").glob("*.yaml"))
_texts = [p.read_text() for p in SHIPPED]

_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
            | st.text(max_size=20) | st.sampled_from(["5s", "1e999", ".inf", "[/]", "${x}",
                                                      "health", "process", "env"]))
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["title", "timeline", "name", "at", "repeat", "times", "every",
                         "parallel", "probe", "fault", "type", "pipeline", "configuration",
                         "key", "duration", "seed", "expect", "steps", "x"]),
        inner, max_size=5),
    max_leaves=25,
)


def _check(text: str) -> None:
    result = validate_text(text, "fuzz.yaml")
    assert isinstance(result, Result)
    for problem in result.problems:
        assert problem.render("fuzz.yaml")
    if result.scenario is not None:
        assert len(expand(result.scenario.timeline)) <= MAX_STEPS


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=400))
def test_any_text_gives_a_result(text: str) -> None:
    _check(text)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.dictionaries(st.sampled_from(["title", "timeline", "pipeline", "seed",
                                                 "configuration", "method", "expect",
                                                 "measurements", "probes", "duration"]),
                                _values, max_size=6))
def test_any_document_gives_a_result(document: dict[str, object]) -> None:
    _check(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(min_value=0, max_value=max(len(_texts) - 1, 0)),
       at=st.integers(min_value=0, max_value=5000),
       cut=st.integers(min_value=0, max_value=40),
       insert=st.text(alphabet="[]{}&*!|>-:,'\"#%@` \n\t9.", max_size=12))
def test_a_mangled_shipped_scenario_gives_a_result(which: int, at: int, cut: int,
                                                   insert: str) -> None:
    text = _texts[which]
    at %= len(text) + 1
    _check(text[:at] + insert + text[at + cut:])
