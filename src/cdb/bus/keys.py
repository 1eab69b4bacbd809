"""Names on the bus: the contract stream and topic names, namespaced.

A namespace (from ``SERVICE_INSTANCE_NAME``, empty by default) prefixes every key, so
several pipelines or test runs share one Redis without seeing each other. With the
empty namespace the names are exactly the contract's.
"""

from __future__ import annotations

from typing import Final

# Streams (contract)
MARKET_DATA: Final = "stream.market_data"
SIGNALS: Final = "stream.signals"
ORDERS: Final = "stream.orders"
FILLS: Final = "stream.fills"
# Beyond the contract: what risk decides and what everyone alerts.
RISK_EVENTS: Final = "stream.risk_events"
ALERTS_STREAM: Final = "stream.alerts"

CONTRACT_STREAMS: Final = (MARKET_DATA, SIGNALS, ORDERS, FILLS)
ALL_STREAMS: Final = (*CONTRACT_STREAMS, RISK_EVENTS, ALERTS_STREAM)
STREAM_MAXLEN: Final = 10_000

# Pub/Sub topics (contract), published alongside the streams.
PUBSUB_TOPIC: Final = {
    MARKET_DATA: "market_data",
    SIGNALS: "signals",
    ORDERS: "orders",
    ALERTS_STREAM: "alerts",
}

DEAD_LETTER_SUFFIX: Final = ".dead"

SERVICES: Final = ("ws", "signal", "risk", "execution", "db_writer")
"""The five services, in pipeline order; each is also its consumer group's name."""


class Namespace:
    """Key names under one namespace.

    Args:
        name: the namespace; empty gives the contract names unchanged.
    """

    __slots__ = ("name", "prefix")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.prefix = f"{name}:" if name else ""

    @property
    def session(self) -> str:
        """The run id of this namespace's distributed pipeline: one continuous session,
        written on every row it stores (``cdb runs``, ``cdb status``)."""
        return f"session-{self.name or 'default'}"

    def key(self, name: str) -> str:
        """A namespaced key (stream, topic, hash)."""
        return f"{self.prefix}{name}"

    def dead_letter(self, stream: str) -> str:
        """Where events of ``stream`` that cannot be processed are parked."""
        return f"{self.prefix}{stream}{DEAD_LETTER_SUFFIX}"

    def strip(self, key: str) -> str:
        """The un-namespaced name of ``key``."""
        return key[len(self.prefix) :] if self.prefix and key.startswith(self.prefix) else key
