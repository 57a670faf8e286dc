"""sync_runs: syncs a person started from the console, with progress and result

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 18:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import extend_connector.store.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("data_point", sa.String(length=32), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column(
            "requested_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "started_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "finished_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("progress", extend_connector.store.types.JSONDoc, nullable=False),
        sa.Column("result", extend_connector.store.types.JSONDoc, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sync_runs_requested_at", "sync_runs", ["requested_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_runs_requested_at", table_name="sync_runs")
    op.drop_table("sync_runs")
