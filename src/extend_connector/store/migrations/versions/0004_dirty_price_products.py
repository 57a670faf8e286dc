"""dirty_price_products: products whose prices a product webhook said may have changed

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import extend_connector.store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dirty_price_products",
        sa.Column("product_number", sa.String(length=64), nullable=False),
        sa.Column(
            "marked_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("product_number", name=op.f("pk_dirty_price_products")),
    )


def downgrade() -> None:
    op.drop_table("dirty_price_products")
