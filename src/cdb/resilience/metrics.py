"""Metrics of outages and what cdb does about them, on the process registry.

``cdb_buffered_events`` is the spec's "buffered events": what producers wrote to their
disk buffer while Redis was unreachable and have not flushed yet. Every metric carries
``service`` and ``instance`` labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from cdb.observability.metrics import REGISTRY

_L = ("service", "instance")

buffered_events = Gauge(
    "cdb_buffered_events",
    "Events in the local disk buffer, waiting for Redis to be flushed in order", _L,
    registry=REGISTRY,
)
buffer_bytes = Gauge(
    "cdb_buffer_bytes", "Bytes of encoded events in the local disk buffer", _L,
    registry=REGISTRY,
)
buffer_full = Gauge(
    "cdb_buffer_full",
    "1 while the disk buffer is at its bound (publishers wait, or are refused)", _L,
    registry=REGISTRY,
)
buffered_total = Counter(
    "cdb_buffered_events_written", "Events written to the disk buffer instead of Redis", _L,
    registry=REGISTRY,
)
flushed_total = Counter(
    "cdb_buffered_events_flushed", "Buffered events published to Redis after an outage", _L,
    registry=REGISTRY,
)
buffer_parked = Counter(
    "cdb_buffer_parked",
    "Buffered entries that no longer decode, moved aside in the buffer file", _L,
    registry=REGISTRY,
)
breaker_state = Gauge(
    "cdb_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open",
    (*_L, "dependency"), registry=REGISTRY,
)
breaker_opened = Counter(
    "cdb_breaker_opened", "Times a circuit breaker opened", (*_L, "dependency"),
    registry=REGISTRY,
)
held_events = Gauge(
    "cdb_held_events",
    "Events a consumer holds unacknowledged while its database is unavailable", _L,
    registry=REGISTRY,
)
