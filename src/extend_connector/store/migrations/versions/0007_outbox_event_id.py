"""outbox: a globally unique event id per event (the shop dedupes on it as `webhook-id`)

Events of rows written before this migration keep the id they may already have been
delivered with, `evt_<row id>` (flows/outbox.py falls back to it when `event_id` is null).

Revision ID: 0007
Revises: 0004 (the lead sets this to the previous head when merging)
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_outbox_event_id"), ["event_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_event_id"))
        batch_op.drop_column("event_id")
