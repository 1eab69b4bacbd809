"""The published JSON Schema of scenarios (``cdb scenario schema``).

The shape follows Chaos Toolkit's experiment (``title``, ``description``, ``tags``,
``configuration``, ``steady-state-hypothesis`` with probes and tolerances, ``method``,
``rollbacks``) and adds cdb's own sections: ``seed``, ``pipeline``, ``timeline``,
``probes`` (sampled during the run), ``invariants``, ``expect`` and ``measurements``.
Providers (faults, actions, probes) and invariants come from the registries: each
``type`` selects its parameter schema through ``if``/``then``, so an error names the
parameter that is wrong rather than "not valid under any of the given schemas".
"""

from __future__ import annotations

import json
from typing import Any, Final

from cdb.bus.keys import SERVICES
from cdb.chaos.scenario.registry import (
    ACTIONS,
    DURATION_PATTERN,
    FAULTS,
    FEATURES,
    INVARIANTS,
    MODES,
    PROBES,
    Entry,
    P,
    load_builtins,
)

SCHEMA_ID: Final = "https://cdb.dev/schemas/scenario-1.json"
EVENT_KINDS: Final = [
    "signal", "order", "fill", "risk_decision", "order_update", "alert", "ess_change",
    "cancel_orders",
]
SHAPES: Final = ["flash_crash", "spike", "gap", "flat", "stale"]


def _dispatch(entries: list[Entry[Any]], what: str) -> dict[str, Any]:
    """``{type: name, ...}`` whose ``type`` picks the parameters of one entry."""
    names = [e.name for e in entries]
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": names, "description": f"the {what}"}},
        "allOf": [
            {"if": {"properties": {"type": {"const": e.name}}, "required": ["type"]},
             "then": e.schema()}
            for e in entries
        ],
    }


def _tolerance() -> dict[str, Any]:
    scalar = {"type": ["boolean", "number", "string", "null"]}
    bound = {"type": ["number", "null"]}
    target = {"type": "string", "description": "key (dotted path) of the probe output"}
    kinds = {
        "range": {
            "properties": {"type": {"const": "range"}, "range": {
                "type": "array", "prefixItems": [bound, bound], "minItems": 2, "maxItems": 2,
                "description": "[low, high], inclusive; null leaves a side open"},
                "target": target},
            "required": ["range"],
        },
        "regex": {
            "properties": {"type": {"const": "regex"}, "pattern": {"type": "string"},
                           "target": target},
            "required": ["pattern"],
        },
        "jsonpath": {
            "properties": {"type": {"const": "jsonpath"}, "path": {"type": "string"},
                           "expect": {}, "count": {"type": "integer", "minimum": 0}},
            "required": ["path"],
        },
        "compare": {
            "properties": {"type": {"const": "compare"},
                           "op": {"enum": ["<", "<=", "==", "!=", ">=", ">"]},
                           "value": scalar, "target": target},
            "required": ["op", "value"],
        },
    }
    return {
        "description": "Chaos Toolkit tolerance: a value (equal), a list (one of), or "
                       "{type: range|regex|jsonpath|compare, ...}",
        "anyOf": [
            scalar,
            {"type": "array"},
            {"type": "object", "required": ["type"],
             "properties": {"type": {"enum": list(kinds)}},
             "allOf": [
                 {"if": {"properties": {"type": {"const": k}}, "required": ["type"]},
                  "then": {**v, "additionalProperties": False}}
                 for k, v in kinds.items()
             ]},
        ],
    }


def _activity() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "a Chaos Toolkit activity: an action (fault or action provider) "
                       "or a probe",
        "required": ["type", "name", "provider"],
        "properties": {
            "type": {"enum": ["action", "probe"]},
            "name": {"type": "string", "minLength": 1},
            "provider": {"type": "object"},
            "tolerance": {"$ref": "#/$defs/tolerance"},
            "duration": P.duration("how long a fault stays on before its undo"),
            "pauses": {"type": "object", "additionalProperties": False, "properties": {
                "before": P.duration(), "after": P.duration()}},
            "background": {"type": "boolean"},
            "controls": {"type": "array"},
        },
        "additionalProperties": False,
        "allOf": [
            {"if": {"properties": {"type": {"const": "action"}}, "required": ["type"]},
             "then": {"properties": {"provider": {"$ref": "#/$defs/action_provider"}}}},
            {"if": {"properties": {"type": {"const": "probe"}}, "required": ["type"]},
             "then": {"properties": {"provider": {"$ref": "#/$defs/probe_provider"}}}},
        ],
    }


def _timeline_entry() -> dict[str, Any]:
    one_of = ["fault", "action", "probe", "parallel"]
    return {
        "type": "object",
        "description": "a step at an offset: exactly one of fault, action, probe, parallel",
        "properties": {
            "name": {"type": "string", "minLength": 1,
                     "description": "unique; measurements and expectations refer to it"},
            "at": P.duration("offset from the start of the timeline (or of its group)"),
            "duration": P.duration("how long the fault stays on before its undo runs"),
            "repeat": {"type": "object", "additionalProperties": False,
                       "required": ["times", "every"], "properties": {
                           "times": {"type": "integer", "minimum": 1, "maximum": 1000},
                           "every": P.duration("period between repetitions")}},
            "fault": {"$ref": "#/$defs/fault"},
            "action": {"$ref": "#/$defs/action"},
            "probe": {"$ref": "#/$defs/probe_provider"},
            "tolerance": {"$ref": "#/$defs/tolerance"},
            "parallel": {"type": "array", "minItems": 1,
                         "items": {"$ref": "#/$defs/timeline_entry"}},
        },
        "additionalProperties": False,
        "oneOf": [{"required": [k]} for k in one_of],
    }


def _ref() -> dict[str, Any]:
    return {
        "description": "a point in time: a timeline step name (its start), name.end, "
                       "name#2 (the second repetition), or seconds",
        "type": ["string", "number"],
    }


def _condition() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "what ends a measurement",
        "additionalProperties": False,
        "properties": {
            "event": {"enum": EVENT_KINDS},
            "match": {"type": "object"},
            "sampled": {"type": "string"},
            "tolerance": {"$ref": "#/$defs/tolerance"},
            "healthy": {"const": True},
            "max_lag": {"type": "integer", "minimum": 0,
                        "description": "with healthy: also wait for the lag to be at most "
                                       "this"},
        },
        "oneOf": [{"required": ["event"]}, {"required": ["sampled", "tolerance"]},
                  {"required": ["healthy"]}],
    }


def _expectation() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "an assertion about the run: a probe at the end, sampled values "
                       "over a window, or recorded events in a window",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "probe": {"$ref": "#/$defs/probe_provider"},
            "sampled": {"type": "string", "description": "name of a sampled probe"},
            "event": {"enum": EVENT_KINDS},
            "match": {"type": "object", "description": "field values the events must have"},
            "tolerance": {"$ref": "#/$defs/tolerance"},
            "count": {"$ref": "#/$defs/tolerance"},
            "when": {"enum": ["always", "eventually", "never", "last"]},
            "from": _ref(),
            "until": _ref(),
            "reason": {"type": "string", "description": "why it should hold (for reports)"},
        },
        "oneOf": [
            {"required": ["probe", "tolerance"]},
            {"required": ["sampled", "tolerance"]},
            {"required": ["event"]},
        ],
    }


def _pipeline() -> dict[str, Any]:
    number = {"type": "number", "exclusiveMinimum": 0}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "mode": {"enum": list(MODES)},
            "modes": {"type": "array", "items": {"enum": list(MODES)}, "minItems": 1,
                      "uniqueItems": True, "description": "modes the scenario can run in"},
            "services": {"type": "array", "items": {"enum": list(SERVICES)},
                         "uniqueItems": True},
            "market": {"type": "object", "additionalProperties": False, "properties": {
                "source": {"enum": ["synthetic", "fake-binance"], "description":
                           "synthetic: ws generates the market; fake-binance: it prints on "
                           "the fake Binance and ws reads its websocket (distributed)"},
                "symbols": {"type": "array", "minItems": 1, "uniqueItems": True,
                            "items": {"type": "string", "pattern": "^[A-Z0-9]+$"}},
                "trades_per_s": number,
                "bursts_per_hour": {"type": "number", "minimum": 0},
                "speed": {"type": ["string", "number"], "pattern": "^(max|realtime)$",
                          "exclusiveMinimum": 0},
                "warmup": P.duration("market time before the timeline starts"),
                "shapes": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["kind", "symbol", "at", "duration"],
                    "properties": {"kind": {"enum": SHAPES}, "symbol": {"type": "string"},
                                   "at": P.duration(), "duration": P.duration(),
                                   "magnitude_pct": {"type": "number"}}}},
            }},
            "venue": {"enum": ["paper", "fake-binance"]},
            "strategy": {"type": "object", "additionalProperties": False, "properties": {
                "id": {"type": "string"}, "threshold_pct": number,
                "min_volume": {"type": "number", "minimum": 0}, "lookback": P.duration()}},
            "limits": {"type": "object", "additionalProperties": False, "properties": {
                "order_notional": number, "max_order_notional": number,
                "max_position": number, "max_exposure": number,
                "max_open_orders": {"type": "integer", "minimum": 1},
                "max_orders_per_window": {"type": "integer", "minimum": 1},
                "rate_window": P.duration(), "initial_cash": number}},
            "ess": {"type": "object", "additionalProperties": {
                "type": ["string", "number", "boolean"]},
                "description": "emergency stop settings, passed as ESS_<NAME> variables"},
            "redis": {"type": "object", "additionalProperties": False, "properties": {
                "persistence": {"enum": ["aof", "none"]}}},
            "proxy": {"enum": ["auto", "always", "never"]},
            "settings": {"type": "object", "propertyNames": {"pattern": "^[A-Z][A-Z0-9_]*$"},
                         "additionalProperties": {"type": ["string", "number", "boolean"]},
                         "description": "environment variables of the services"},
            "requires": {"type": "array", "uniqueItems": True,
                         "items": {"enum": list(FEATURES)}},
        },
    }


def build() -> dict[str, Any]:
    """The whole scenario schema, with every registered provider and invariant."""
    load_builtins()
    faults, actions, probes = list(FAULTS), list(ACTIONS), list(PROBES)
    invariants = list(INVARIANTS)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cdb chaos scenario",
        "description": "A Chaos Toolkit style experiment with a timeline, faults, probes "
                       "and invariants, run by `cdb scenario run`.",
        "type": "object",
        "required": ["title"],
        "additionalProperties": False,
        "properties": {
            "version": {"type": "string"},
            "title": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "contributions": {"type": "object",
                              "additionalProperties": {"enum": ["high", "medium", "low",
                                                                "none"]}},
            "configuration": {"type": "object", "additionalProperties": {"anyOf": [
                {"type": ["string", "number", "boolean", "null"]},
                {"type": "object", "required": ["type", "key"], "additionalProperties": False,
                 "properties": {"type": {"const": "env"}, "key": {"type": "string"},
                                "default": {}}}]}},
            "extensions": {"type": "array", "items": {"type": "object"}},
            "seed": {"type": "integer", "minimum": 0},
            "duration": P.duration("length of the timeline (default: its last step)"),
            "settle": P.duration("time after the last undo for the pipeline to recover"),
            "sample_every": P.duration("period of the built-in and declared probes"),
            "pipeline": _pipeline(),
            "steady-state-hypothesis": {
                "type": "object", "required": ["title"], "additionalProperties": False,
                "properties": {"title": {"type": "string"}, "probes": {
                    "type": "array", "items": {"allOf": [
                        {"$ref": "#/$defs/activity"},
                        {"required": ["tolerance"], "properties": {
                            "type": {"const": "probe"}}}]}}}},
            "method": {"type": "array", "items": {"$ref": "#/$defs/activity"}},
            "timeline": {"type": "array", "items": {"$ref": "#/$defs/timeline_entry"}},
            "rollbacks": {"type": "array", "items": {"allOf": [
                {"$ref": "#/$defs/activity"}, {"properties": {"type": {"const": "action"}}}]}},
            "probes": {"type": "array", "items": {
                "type": "object", "required": ["name", "provider"],
                "additionalProperties": False, "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "every": P.duration("sampling period (default sample_every)"),
                    "provider": {"$ref": "#/$defs/probe_provider"}}}},
            "invariants": {"type": "array", "items": {"anyOf": [
                {"enum": [e.name for e in invariants]},
                {"$ref": "#/$defs/invariant"}]}},
            "expect": {"type": "array", "items": {"$ref": "#/$defs/expectation"}},
            "measurements": {"type": "array", "items": {
                "type": "object", "required": ["name", "from"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "kind": {"enum": ["detect", "trip", "recover"]},
                    "from": _ref(),
                    "until": {"$ref": "#/$defs/condition"},
                    "max": P.duration("the assertion: measured time at most this"),
                    "down_within": P.duration(
                        "recover: the outage must begin within this of `from`; a later one "
                        "is another fault's (then nothing to recover from: unknown)"),
                    "required": {"type": "boolean",
                                 "description": "fail when it never happens (default true "
                                                "with max)"}},
                "anyOf": [{"required": ["kind"]}, {"required": ["until"]}]}},
        },
        "$defs": {
            "duration": P.duration(),
            "tolerance": _tolerance(),
            "fault": _dispatch(faults, "fault"),
            "action": _dispatch(actions, "action"),
            "action_provider": _dispatch(faults + actions, "fault or action"),
            "probe_provider": _dispatch(probes, "probe"),
            "invariant": _dispatch(invariants, "invariant"),
            "activity": _activity(),
            "timeline_entry": _timeline_entry(),
            "condition": _condition(),
            "expectation": _expectation(),
        },
    }


def dumps(indent: int = 2) -> str:
    """The schema as JSON text."""
    return json.dumps(build(), indent=indent)


__all__ = ["DURATION_PATTERN", "SCHEMA_ID", "build", "dumps"]
