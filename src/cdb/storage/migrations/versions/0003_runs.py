"""Runs: a ``runs`` table, and the ``run_id`` of the run that wrote each event row.

Rows written before runs existed get the run id ``""``. The primary key becomes
``(id, run_id)``: two runs of one file derive the same event ids, and each keeps its
rows (a redelivered event within a run is still a no-op).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_TABLES = (
    "signals", "orders", "risk_decisions", "fills", "order_updates", "alerts", "ess_changes",
    "order_cancels",
)


def upgrade() -> None:
    # ALTER statements name their table directly (``schema_translate_map`` only maps
    # Table objects): give them the pipeline's schema.
    schema = op.get_context().version_table_schema
    for table in EVENT_TABLES:
        # Batch mode: SQLite changes a primary key by copying the table.
        with op.batch_alter_table(table, schema=schema) as batch:
            batch.add_column(
                sa.Column("run_id", sa.Text(), nullable=False, server_default=sa.text("''"))
            )
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.create_primary_key(f"pk_{table}", ["id", "run_id"])
            batch.create_index(f"ix_{table}_run_id", ["run_id"])
    op.create_table(
        "runs",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("started_ns", sa.BigInteger(), nullable=False),
        sa.Column("finished_ns", sa.BigInteger(), nullable=False),
        sa.Column("legs", sa.Integer(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("series", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
        schema=schema,
    )


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_table("runs", schema=schema)
    for table in EVENT_TABLES:
        with op.batch_alter_table(table, schema=schema) as batch:
            batch.drop_index(f"ix_{table}_run_id")
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.drop_column("run_id")
            batch.create_primary_key(f"pk_{table}", ["id"])
