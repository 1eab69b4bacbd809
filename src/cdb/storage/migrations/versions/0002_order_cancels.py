"""Order cancel commands of the emergency stop.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_cancels",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("correlation_id", sa.Text(), nullable=False),
        sa.Column("causation_id", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("v", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("keep_reduce_only", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_order_cancels"),
    )
    op.create_index("ix_order_cancels_correlation_id", "order_cancels", ["correlation_id"])
    op.create_index("ix_order_cancels_causation_id", "order_cancels", ["causation_id"])


def downgrade() -> None:
    op.drop_table("order_cancels")
