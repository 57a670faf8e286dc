"""dirty_records: records (orders, products, customers) a webhook marked for a coalesced refresh

Before, every job-bearing notification was a durable job of its own, enqueued in the inbox's
transaction; now the inbox marks the record here and one drainer per kind refreshes the marked
records in batches (flows/records.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import extend_connector.store.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dirty_records",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column(
            "first_marked_at",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column(
            "last_marked_at",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column(
            "last_failed_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("kind", "key"),
    )
    op.create_index("ix_dirty_records_due", "dirty_records", ["kind", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_dirty_records_due", table_name="dirty_records")
    op.drop_table("dirty_records")
