"""extend_rate_buckets: the fleet-wide rate limit of Extend calls (GCRA per credential and group)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "extend_rate_buckets",
        sa.Column("credential", sa.String(length=400), nullable=False),
        sa.Column("rate_group", sa.String(length=64), nullable=False),
        sa.Column("tat", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("credential", "rate_group", name=op.f("pk_extend_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("extend_rate_buckets")
