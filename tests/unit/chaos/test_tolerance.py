"""Chaos Toolkit tolerances and cdb's extensions."""

from __future__ import annotations

import pytest

from cdb.chaos.checks.tolerance import ToleranceError, describe, jsonpath, met


@pytest.mark.parametrize(("tolerance", "output", "expected"), [
    (True, True, True), (True, 1, False), (200, 200.0, True), ("healthy", "healthy", True),
    ("healthy", {"status": "healthy", "x": 1}, True), ("HALTED", {"state": "ACTIVE"}, False),
    (["degraded", "unhealthy"], {"status": "degraded"}, True), ([1, 2], 3, False),
    ({"type": "range", "range": [0, 5]}, 5, True),
    ({"type": "range", "range": [0, 5]}, 5.1, False),
    ({"type": "range", "range": [10, None]}, 99, True),
    ({"type": "range", "range": [None, 0]}, {"total": 0}, True),
    ({"type": "range", "range": [None, 0], "target": "total"}, {"total": 0}, True),
    ({"type": "regex", "pattern": "^HALT"}, "HALTED", True),
    ({"type": "compare", "op": ">=", "value": 3}, "4", True),
    ({"type": "compare", "op": "<", "value": 3, "target": "a.b"}, {"a": {"b": 5}}, False),
    ({"type": "jsonpath", "path": "$.services[*]", "expect": "healthy"},
     {"services": ["healthy", "healthy"]}, True),
    ({"type": "jsonpath", "path": "$.services[*]", "count": 3}, {"services": [1, 2]}, False),
])
def test_tolerances(tolerance: object, output: object, expected: bool) -> None:
    assert met(tolerance, output) is expected


def test_a_range_on_text_is_an_error_not_a_failure() -> None:
    with pytest.raises(ToleranceError, match="needs a number"):
        met({"type": "range", "range": [0, 1]}, "abc")


def test_jsonpath_subset() -> None:
    doc = {"a": [{"b": 1}, {"b": 2}], "c": {"d": 3}}
    assert jsonpath("$.a[*].b", doc) == [1, 2]
    assert jsonpath("$.a[1].b", doc) == [2]
    assert jsonpath("$.c.d", doc) == [3]
    with pytest.raises(ToleranceError):
        jsonpath("$..b", doc)


def test_descriptions() -> None:
    assert describe({"type": "range", "range": [1, None]}) == ">= 1"
    assert describe("healthy") == "== 'healthy'"
