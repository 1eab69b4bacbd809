"""The database schema: one table per persisted event type, as SQLAlchemy Core tables.

Columns are named exactly like the event fields, so a row is ``msgspec.structs.asdict``
of its event and an event is ``msgspec.convert`` of its row, with no mapping code in
between. The event id and the run id are the primary key: that is what makes a
redelivered event a no-op instead of a second row. ``*_e8`` fixed-point values are
BIGINT, Literal fields are plain text. Rows hold nothing the event does not (no
insertion time), so two runs of one replay produce identical rows (but for run_id).

Each event row also carries the ``run_id`` of the run that wrote it (the last column,
not an event field: the Store adds it), so one database holds many runs apart. Runs
themselves are rows of ``runs``.

Tables carry no schema: the Postgres namespace of a pipeline is applied at execution
time (``schema_translate_map``), so one ``MetaData`` serves every namespace.

This module describes the current schema; the migrations in ``migrations/versions``
are what create it, and a test checks that the two agree.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, Table, Text, text

from cdb.events import (
    Alert,
    CancelOrders,
    EssChange,
    Event,
    Fill,
    Order,
    OrderUpdate,
    RiskDecision,
    Signal,
)

# Deterministic constraint and index names, so migrations can refer to them by name
# on every backend.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata: Final = MetaData(naming_convention=NAMING_CONVENTION)


def _text(name: str) -> Column[str]:
    return Column(name, Text, nullable=False)


def _int(name: str) -> Column[int]:
    # BIGINT for every integer field: an e8 value or a count never overflows a column.
    return Column(name, BigInteger, nullable=False)


def _bool(name: str) -> Column[bool]:
    return Column(name, Boolean, nullable=False)


def _envelope() -> list[Column[Any]]:
    # A chain is found by correlation id (everything a trade started) and walked by
    # causation id, hence the two indexes.
    return [
        Column("id", Text, primary_key=True),
        _int("ts"),
        Column("correlation_id", Text, nullable=False, index=True),
        Column("causation_id", Text, nullable=False, index=True),
        _text("source"),
        Column("v", Integer, nullable=False),
    ]


def _run_id() -> Column[str]:
    # Rows written before runs existed belong to the run "". Part of the primary key:
    # two runs of one file derive the same event ids.
    return Column("run_id", Text, primary_key=True, server_default=text("''"), index=True)


signals: Final = Table(
    "signals",
    metadata,
    *_envelope(),
    _text("strategy_id"),
    _text("symbol"),
    _text("side"),
    _int("price_e8"),
    _int("trade_id"),
    _int("move_bp"),
    _int("volume_e8"),
    _run_id(),
)

orders: Final = Table(
    "orders",
    metadata,
    *_envelope(),
    _text("client_order_id"),
    _text("symbol"),
    _text("side"),
    _text("order_type"),
    _int("qty_e8"),
    _int("price_e8"),
    _int("ref_price_e8"),
    _int("ref_trade_id"),
    _bool("reduce_only"),
    _run_id(),
)

risk_decisions: Final = Table(
    "risk_decisions",
    metadata,
    *_envelope(),
    _text("signal_id"),
    _text("symbol"),
    _text("side"),
    _bool("approved"),
    _text("reason"),
    _text("detail"),
    _run_id(),
)

fills: Final = Table(
    "fills",
    metadata,
    *_envelope(),
    _text("order_id"),
    _text("client_order_id"),
    _text("venue"),
    _text("symbol"),
    _text("side"),
    _int("price_e8"),
    _int("qty_e8"),
    _int("fee_e8"),
    _text("venue_fill_id"),
    _text("order_status"),
    _int("cum_qty_e8"),
    _run_id(),
)

order_updates: Final = Table(
    "order_updates",
    metadata,
    *_envelope(),
    _text("order_id"),
    _text("client_order_id"),
    _text("symbol"),
    _text("status"),
    _text("reason"),
    _int("filled_qty_e8"),
    _run_id(),
)

alerts: Final = Table(
    "alerts",
    metadata,
    *_envelope(),
    _text("level"),
    _text("code"),
    _text("message"),
    _run_id(),
)

ess_changes: Final = Table(
    "ess_changes",
    metadata,
    *_envelope(),
    _text("state"),
    _text("reason"),
    _text("actor"),
    _text("detail"),
    _run_id(),
)

order_cancels: Final = Table(
    "order_cancels",
    metadata,
    *_envelope(),
    _text("reason"),
    _text("symbol"),
    _bool("keep_reduce_only"),
    _run_id(),
)

runs: Final = Table(
    "runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    # synthetic, replay, live or distributed.
    _text("kind"),
    # Wall time the run (its first leg) started.
    _int("started_ns"),
    # Wall time its last leg finished; 0 while running (or if it died).
    _int("finished_ns"),
    # How many times it was started (a resumed run is continued, not replaced).
    Column("legs", Integer, nullable=False),
    # JSON: the options and settings of its last leg.
    _text("settings"),
    # JSON: the input files (path, size, sha256) or the synthetic market.
    _text("inputs"),
    # JSON: the RunSummary of its last leg; empty while running.
    _text("summary"),
    # JSON: downsampled price per symbol and equity over time, for the report.
    _text("series"),
)
"""One row per run: what was run, on what, and how it ended."""

TABLE_OF: Final[dict[type[Event], Table]] = {
    Signal: signals,
    RiskDecision: risk_decisions,
    Order: orders,
    Fill: fills,
    OrderUpdate: order_updates,
    Alert: alerts,
    EssChange: ess_changes,
    CancelOrders: order_cancels,
}
"""The table each persisted event type is written to (``Trade`` is not persisted)."""

EVENT_OF: Final[dict[str, type[Event]]] = {t.name: e for e, t in TABLE_OF.items()}
"""The event type stored in each table, by table name."""

TABLE_NAMES: Final = tuple(t.name for t in TABLE_OF.values())
"""Every event table, in chain order (signal, then decision or order, then fills)."""
