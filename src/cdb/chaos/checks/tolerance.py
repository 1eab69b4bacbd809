"""Chaos Toolkit tolerances: does a probe's output meet what the scenario expects?

- a scalar: the output equals it (``true``, ``200``, ``"healthy"``);
- a list: the output is one of its items;
- ``{type: range, range: [low, high], target}``: a number within, bounds inclusive,
  ``null`` leaving a side open (cdb's extension);
- ``{type: regex, pattern, target}``: the text matches;
- ``{type: jsonpath, path, expect, count}``: values found at a JSONPath (the subset
  ``$.a.b[0]``, ``$.a[*].b``) equal ``expect`` (or one of it), or there are ``count``;
- ``{type: compare, op, value, target}``: ``output op value`` (cdb's extension).

``target`` picks a key of a mapping output (dotted for nesting); a mapping output
compared with a scalar uses its ``status``, ``state``, ``value`` or ``total`` key, so
``tolerance: healthy`` works on a whole ``/health`` body.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, Final

_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
    ">=": operator.ge, ">": operator.gt,
}
_DEFAULT_KEYS: Final = ("status", "state", "value", "total")


class ToleranceError(ValueError):
    """The tolerance cannot be applied to this output (wrong shape, bad path)."""


def met(tolerance: Any, output: Any) -> bool:
    """Whether ``output`` meets ``tolerance``.

    Raises:
        ToleranceError: the tolerance does not fit the output.
    """
    if isinstance(tolerance, dict):
        kind = tolerance.get("type")
        if kind == "range":
            return _range(tolerance, _target(output, tolerance.get("target")))
        if kind == "regex":
            value = _target(output, tolerance.get("target"))
            return re.search(str(tolerance["pattern"]), _text(value)) is not None
        if kind == "jsonpath":
            return _jsonpath(tolerance, output)
        if kind == "compare":
            value = _number_or_value(_target(output, tolerance.get("target")))
            try:
                return bool(_OPS[tolerance["op"]](value, tolerance["value"]))
            except TypeError as exc:
                raise ToleranceError(f"cannot compare {value!r} {tolerance['op']} "
                                     f"{tolerance['value']!r}") from exc
        raise ToleranceError(f"unknown tolerance type {kind!r}")
    if isinstance(tolerance, list):
        return any(_equal(_scalar(output, item), item) for item in tolerance)
    return _equal(_scalar(output, tolerance), tolerance)


def describe(tolerance: Any) -> str:
    """The tolerance for people: ``in [0, 5]``, ``== healthy``."""
    if isinstance(tolerance, dict):
        kind = tolerance.get("type")
        on = f" ({tolerance['target']})" if tolerance.get("target") else ""
        if kind == "range":
            low, high = tolerance["range"]
            if low is None:
                return f"<= {high}{on}"
            if high is None:
                return f">= {low}{on}"
            return f"in [{low}, {high}]{on}"
        if kind == "regex":
            return f"matches /{tolerance['pattern']}/{on}"
        if kind == "compare":
            return f"{tolerance['op']} {tolerance['value']}{on}"
        if kind == "jsonpath":
            return f"{tolerance['path']} == {tolerance.get('expect', '*')}"
    if isinstance(tolerance, list):
        return f"one of {tolerance}"
    return f"== {tolerance!r}"


def _equal(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected or (value == expected and type(value) is type(expected))
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return float(value) == float(expected)
    return bool(value == expected)


def _scalar(output: Any, expected: Any) -> Any:
    """A mapping compared with a scalar: its status/state/value."""
    if isinstance(output, dict) and not isinstance(expected, dict | list):
        for key in _DEFAULT_KEYS:
            if key in output:
                return output[key]
    return output


def _target(output: Any, target: str | None) -> Any:
    if not target:
        if isinstance(output, dict):
            for key in _DEFAULT_KEYS:
                if key in output:
                    return output[key]
        return output
    value = output
    for part in target.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise ToleranceError(f"the output has no {target!r}")
    return value


def _number_or_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _range(tolerance: dict[str, Any], value: Any) -> bool:
    low, high = tolerance["range"]
    number = _number_or_value(value)
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ToleranceError(f"a range needs a number, the output is {value!r}")
    return (low is None or number >= low) and (high is None or number <= high)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


_STEP: Final = re.compile(r"\.([^.\[\]]+)|\[(\d+|\*)\]")


def jsonpath(path: str, document: Any) -> list[Any]:
    """Values at ``path`` (``$``, ``.key``, ``[n]``, ``[*]``).

    Raises:
        ToleranceError: a path outside the supported subset.
    """
    if not path.startswith("$"):
        raise ToleranceError(f"JSONPath {path!r} must start with $")
    rest = path[1:]
    steps = []
    pos = 0
    for m in _STEP.finditer(rest):
        if m.start() != pos:
            raise ToleranceError(f"unsupported JSONPath {path!r} (use $.a.b, [n], [*])")
        steps.append(m.group(1) if m.group(1) is not None else m.group(2))
        pos = m.end()
    if pos != len(rest):
        raise ToleranceError(f"unsupported JSONPath {path!r} (use $.a.b, [n], [*])")
    values = [document]
    for step in steps:
        nxt: list[Any] = []
        for value in values:
            if step == "*":
                nxt.extend(value if isinstance(value, list) else
                           value.values() if isinstance(value, dict) else [])
            elif step.isdigit() and isinstance(value, list):
                if int(step) < len(value):
                    nxt.append(value[int(step)])
            elif isinstance(value, dict) and step in value:
                nxt.append(value[step])
        values = nxt
    return values


def _jsonpath(tolerance: dict[str, Any], output: Any) -> bool:
    found = jsonpath(str(tolerance["path"]), output)
    if "count" in tolerance:
        return len(found) == int(tolerance["count"])
    if "expect" not in tolerance:
        return bool(found)
    expect = tolerance["expect"]
    options = expect if isinstance(expect, list) else [expect]
    return bool(found) and all(any(_equal(v, e) for e in options) for v in found)
