"""Toxiproxy's toxics and the checks of what a request says about them."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Final, Literal

Stream = Literal["upstream", "downstream"]
ATTRIBUTES: Final[dict[str, dict[str, float]]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "limit_data": {"bytes": 0},
}
_MAX_ATTRIBUTE: Final = 1e12


class ProxyError(ValueError):
    """A bad request to the proxy API (status and message)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ProxyError(400, f"{text[:100]!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def finite_number(what: str, value: Any, *, low: float = 0.0, high: float = math.inf) -> float:
    """A finite number from a request body, within [low, high]; ProxyError(400) if not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProxyError(400, f"{what} must be a number, not {json.dumps(value)[:40]}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ProxyError(400, f"{what} must be a finite number from {low:g} to {high:g}, "
                              f"not {value!r}")
    return number


def checked_attributes(kind: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ProxyError(400, "attributes must be a JSON object")
    unknown = set(value) - set(ATTRIBUTES.get(kind, {}))
    if unknown:
        raise ProxyError(400, f"{kind} has no attribute {', '.join(sorted(map(str, unknown)))}; "
                              f"it has {', '.join(ATTRIBUTES.get(kind, {}))}")
    return {k: finite_number(f"{kind}.{k}", v, high=_MAX_ATTRIBUTE) for k, v in value.items()}


class Toxic:
    """One toxic of a proxy."""

    def __init__(self, name: str, kind: str, stream: Stream, toxicity: Any,
                 attributes: Any) -> None:
        if kind not in ATTRIBUTES:
            raise ProxyError(400, f"unknown toxic type {kind!r}; one of {', '.join(ATTRIBUTES)}")
        if stream not in ("upstream", "downstream"):
            raise ProxyError(400, f"stream must be upstream or downstream, not {stream!r}")
        toxicity = finite_number("toxicity", toxicity, high=1.0)
        attributes = checked_attributes(kind, attributes)
        self.name = name
        self.type = kind
        self.stream = stream
        self.toxicity = toxicity
        self.attributes = {**ATTRIBUTES[kind], **{k: float(v) for k, v in attributes.items()}}
        self.chunks = 0
        self.connections = 0
        self.bytes = 0
        self.removed = asyncio.Event()

    def attr(self, key: str) -> float:
        return float(self.attributes[key])

    def to_json(self) -> dict[str, Any]:
        attrs = {k: int(v) if float(v).is_integer() else v for k, v in self.attributes.items()}
        return {"name": self.name, "type": self.type, "stream": self.stream,
                "toxicity": self.toxicity, "attributes": attrs,
                "stats": {"chunks": self.chunks, "connections": self.connections,
                          "bytes": self.bytes}}
