"""extend_reachability.groups: what each process has seen of Extend per rate-limit group

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 04:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import extend_connector.store.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: a row written by an older process has no groups (read as none).
    with op.batch_alter_table("extend_reachability") as batch:
        batch.add_column(sa.Column("groups", extend_connector.store.types.JSONDoc, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("extend_reachability") as batch:
        batch.drop_column("groups")
