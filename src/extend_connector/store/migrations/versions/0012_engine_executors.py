"""engine_executors: each process that runs jobs, and when it last said it is alive

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 07:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import extend_connector.store.types

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "engine_executors",
        sa.Column("executor_id", sa.String(length=200), nullable=False),
        sa.Column("application_version", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("process", sa.String(length=200), nullable=False),
        sa.Column(
            "started_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "seen_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("executor_id"),
    )
    op.create_index("ix_engine_executors_seen_at", "engine_executors", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_engine_executors_seen_at", table_name="engine_executors")
    op.drop_table("engine_executors")
