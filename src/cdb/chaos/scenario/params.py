"""Typed access to a step's or an invariant's parameters, as the scenario gives them."""

from __future__ import annotations

from typing import Any

from cdb.chaos.scenario.registry import parse_duration


class Params:
    """Typed access to a provider's parameters (the schema has checked them)."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.raw = params

    def text(self, key: str, default: str | None = None) -> str:
        value = self.raw.get(key, default)
        if value is None:
            raise KeyError(key)
        return str(value)

    def number(self, key: str, default: float | None = None) -> float:
        value = self.raw.get(key, default)
        if value is None:
            raise KeyError(key)
        return float(value)

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.raw.get(key, default)
        if value is None:
            raise KeyError(key)
        return int(value)

    def flag(self, key: str, default: bool = False) -> bool:
        return bool(self.raw.get(key, default))

    def duration(self, key: str, default: float | None = None) -> float:
        value = self.raw.get(key)
        if value is None:
            if default is None:
                raise KeyError(key)
            return default
        return parse_duration(value)

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)
