"""Initial schema: one table per persisted event type.

Revision ID: 0001
Revises:
Create Date: 2025-11-22

Written out in full rather than built from ``cdb.storage.tables``: a migration must
keep creating the schema of its time after the tables module has moved on. No schema
is named here; the pipeline's namespace is applied by ``schema_translate_map``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    "signals",
    "risk_decisions",
    "orders",
    "fills",
    "order_updates",
    "alerts",
    "ess_changes",
)


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=False)


def _int(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def _bool(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False)


def _create(table: str, *columns: sa.Column[Any]) -> None:
    op.create_table(
        table,
        sa.Column("id", sa.Text(), nullable=False),
        _int("ts"),
        _text("correlation_id"),
        _text("causation_id"),
        _text("source"),
        sa.Column("v", sa.Integer(), nullable=False),
        *columns,
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
    )
    op.create_index(f"ix_{table}_correlation_id", table, ["correlation_id"])
    op.create_index(f"ix_{table}_causation_id", table, ["causation_id"])


def upgrade() -> None:
    _create(
        "signals",
        _text("strategy_id"),
        _text("symbol"),
        _text("side"),
        _int("price_e8"),
        _int("trade_id"),
        _int("move_bp"),
        _int("volume_e8"),
    )
    _create(
        "risk_decisions",
        _text("signal_id"),
        _text("symbol"),
        _text("side"),
        _bool("approved"),
        _text("reason"),
        _text("detail"),
    )
    _create(
        "orders",
        _text("client_order_id"),
        _text("symbol"),
        _text("side"),
        _text("order_type"),
        _int("qty_e8"),
        _int("price_e8"),
        _int("ref_price_e8"),
        _int("ref_trade_id"),
        _bool("reduce_only"),
    )
    _create(
        "fills",
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
    )
    _create(
        "order_updates",
        _text("order_id"),
        _text("client_order_id"),
        _text("symbol"),
        _text("status"),
        _text("reason"),
        _int("filled_qty_e8"),
    )
    _create("alerts", _text("level"), _text("code"), _text("message"))
    _create("ess_changes", _text("state"), _text("reason"), _text("actor"), _text("detail"))


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
