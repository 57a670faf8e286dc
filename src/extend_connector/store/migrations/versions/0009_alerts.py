"""alerts: one row per alert condition while open and after (flows/alerts.py)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 17:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import extend_connector.store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = extend_connector.store.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("condition", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("summary", sa.String(length=1000), nullable=False),
        sa.Column("detail", extend_connector.store.types.JSONDoc, nullable=False),
        sa.Column("opened_at", UTC_DATETIME(timezone=True), nullable=False),
        sa.Column("resolved_at", UTC_DATETIME(timezone=True), nullable=True),
        sa.Column("open_sent_at", UTC_DATETIME(timezone=True), nullable=True),
        sa.Column("resolved_sent_at", UTC_DATETIME(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(
        "uq_alerts_open_condition",
        "alerts",
        ["condition"],
        unique=True,
        sqlite_where=sa.text("resolved_at IS NULL"),
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index("ix_alerts_opened_at", "alerts", ["opened_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_opened_at", table_name="alerts")
    op.drop_index("uq_alerts_open_condition", table_name="alerts")
    op.drop_table("alerts")
