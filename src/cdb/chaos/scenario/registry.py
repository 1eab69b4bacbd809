"""Registries of what a scenario can name: faults, actions, probes and invariants.

Each entry carries the JSON Schema of its parameters, so the published scenario
schema is built from the registries: a fault, probe or invariant registers in one
place and becomes usable and validated without touching the runner::

    @FAULTS.register("exchange", summary="...", params={"error": P.enum(...)})
    class ExchangeFault(ScenarioFault): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

from cdb.errors import CdbError

Kind = Literal["fault", "action", "probe", "invariant"]
MODES: Final = ("embedded", "distributed")
DURATION_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"
FEATURES: Final = ("binance_venue", "disk_buffer", "ess", "fake_binance", "ws_shapes")
"""What a scenario may say it relies on (``pipeline.requires``); every one is built in."""

F = TypeVar("F")

ACTIVITY: Final = ("trades", "signals", "orders", "fills", "rejections", "open_orders",
                   "in_flight")
"""What a fault can require to have happened before it (``requires_activity``):
counts of events up to its start; ``open_orders`` resting at its start; ``in_flight``
events a killed service held or was owed when it died (the kill and restart faults)."""
REQUIRES_ACTIVITY: Final[dict[str, Any]] = {
    "type": "object", "additionalProperties": False,
    "properties": {k: {"type": "integer", "minimum": 0} for k in ACTIVITY},
    "description": "the least activity there must have been before the fault (else the "
                   "fault tested nothing and the run is unknown): "
                   + ", ".join(ACTIVITY),
}
REQUIRES: Final[dict[str, Any]] = {
    "type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
    "description": "the least the invariant must have examined, by what it counts (its "
                   "detail names them); below it the invariant is unknown, never pass. "
                   "0 lifts a default minimum",
}


class Unavailable(CdbError):
    """What a step needs is not there (a mode without processes, a pipeline without it).

    A scenario that meets one ends ``unknown``, never ``pass``: the coordinator does
    not claim what it could not check.

    Args:
        reason: what is missing and, where known, what provides it.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Entry(msgspec.Struct, Generic[F], frozen=True, kw_only=True):
    """One registered fault, action, probe or invariant."""

    name: str
    kind: Kind
    summary: str
    params: dict[str, Any]
    """JSON Schema of each parameter, by name."""
    required: tuple[str, ...]
    modes: tuple[str, ...]
    """Pipeline modes it works in."""
    impl: F

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of ``{type: <name>, ...params}`` (every fault also takes
        ``requires_activity``, every invariant ``requires``)."""
        common = {"fault": {"requires_activity": REQUIRES_ACTIVITY},
                  "invariant": {"requires": REQUIRES}}.get(self.kind, {})
        return {
            "type": "object",
            "description": self.summary,
            "properties": {"type": {"const": self.name}, **common, **self.params},
            "required": ["type", *self.required],
            "additionalProperties": False,
        }


class Registry(Generic[F]):
    """Named entries of one kind."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[F]] = {}

    def register(
        self, name: str, *, summary: str, params: dict[str, Any] | None = None,
        required: tuple[str, ...] = (), modes: tuple[str, ...] = MODES,
    ) -> Callable[[F], F]:
        """Register ``impl`` under ``name`` (decorator); a second one replaces the first."""

        def add(impl: F) -> F:
            self._entries[name] = Entry(
                name=name, kind=self.kind, summary=summary, params=dict(params or {}),
                required=required, modes=modes, impl=impl,
            )
            return impl

        return add

    def get(self, name: str) -> Entry[F]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"no {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[F]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)


FAULTS: Final[Registry[Any]] = Registry("fault")
ACTIONS: Final[Registry[Any]] = Registry("action")
PROBES: Final[Registry[Any]] = Registry("probe")
INVARIANTS: Final[Registry[Any]] = Registry("invariant")

BUILTINS: Final = (
    "cdb.chaos.checks.invariants", "cdb.chaos.checks.leaks", "cdb.chaos.faults.actions",
    "cdb.chaos.faults.exchange", "cdb.chaos.faults.flood", "cdb.chaos.faults.infra",
    "cdb.chaos.faults.market", "cdb.chaos.faults.network", "cdb.chaos.faults.probes",
    "cdb.chaos.faults.sabotage", "cdb.chaos.faults.service",
)
"""The modules of the built-in providers and invariants; each registers itself on import.
Named, not imported, so the registries (which the providers import) stay below them:
the plugin pattern of entry points, without the packaging."""


def load_builtins() -> None:
    """Import every built-in provider module once (importing it registers it)."""
    for module in BUILTINS:
        importlib.import_module(module)


class P:
    """JSON Schema fragments for parameters."""

    @staticmethod
    def duration(description: str = "") -> dict[str, Any]:
        """Seconds as a number, or a string such as ``500ms``, ``5s``, ``2m``, ``1h``."""
        return {
            "type": ["number", "string"], "minimum": 0, "pattern": DURATION_PATTERN,
            "description": description or "a duration: seconds, or 500ms, 5s, 2m, 1h",
        }

    @staticmethod
    def string(description: str = "", *, enum: list[str] | None = None,
               min_length: int = 1) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "minLength": min_length}
        if enum is not None:
            out = {"enum": enum}
        if description:
            out["description"] = description
        return out

    @staticmethod
    def number(description: str = "", *, minimum: float | None = None,
               maximum: float | None = None, exclusive_minimum: float | None = None,
               ) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if minimum is not None:
            out["minimum"] = minimum
        if maximum is not None:
            out["maximum"] = maximum
        if exclusive_minimum is not None:
            out["exclusiveMinimum"] = exclusive_minimum
        if description:
            out["description"] = description
        return out

    @staticmethod
    def integer(description: str = "", *, minimum: int | None = None,
                maximum: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if minimum is not None:
            out["minimum"] = minimum
        if maximum is not None:
            out["maximum"] = maximum
        if description:
            out["description"] = description
        return out

    @staticmethod
    def boolean(description: str = "") -> dict[str, Any]:
        return {"type": "boolean", "description": description} if description else {
            "type": "boolean"}

    @staticmethod
    def strings(description: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}
        if description:
            out["description"] = description
        return out

    @staticmethod
    def anything(description: str = "") -> dict[str, Any]:
        return {"description": description} if description else {}


def parse_duration(value: float | int | str) -> float:
    """``5``, ``0.5``, ``"500ms"``, ``"5s"``, ``"2m"``, ``"1h"`` → seconds.

    Raises:
        ValueError: not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is a negative duration")
        return float(value)
    text = value.strip()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            try:
                seconds = float(number) * factor
            except ValueError:
                break
            if seconds < 0 or not number[:1].isdigit():
                break
            return seconds
    raise ValueError(f"{value!r} is not a duration such as 500ms, 5s, 2m or 1h")
