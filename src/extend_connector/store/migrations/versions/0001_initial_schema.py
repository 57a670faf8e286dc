"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 11:29:16.696713
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import extend_connector.store.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "balances",
        sa.Column("product_number", sa.String(length=64), nullable=False),
        sa.Column("warehouse", sa.String(length=64), nullable=False),
        sa.Column(
            "available", extend_connector.store.types.Amount(precision=20, scale=6), nullable=False
        ),
        sa.Column(
            "physical", extend_connector.store.types.Amount(precision=20, scale=6), nullable=True
        ),
        sa.Column(
            "reserved", extend_connector.store.types.Amount(precision=20, scale=6), nullable=True
        ),
        sa.Column(
            "extend_changed_at",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "confirmed_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "notified_available",
            extend_connector.store.types.Amount(precision=20, scale=6),
            nullable=True,
        ),
        sa.Column(
            "notified_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("product_number", "warehouse", name=op.f("pk_balances")),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "high_water_mark",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "signpost", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_run_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "stats",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cursors")),
    )
    op.create_table(
        "customers",
        sa.Column("customer_number", sa.String(length=64), nullable=False),
        sa.Column("shop_ref", sa.String(length=128), nullable=True),
        sa.Column("name", sa.String(length=400), nullable=False),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("organization_number", sa.String(length=64), nullable=True),
        sa.Column("customer_group", sa.String(length=64), nullable=True),
        sa.Column("price_list", sa.String(length=64), nullable=True),
        sa.Column("salesperson", sa.String(length=64), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column(
            "delivery_address",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "invoice_address",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "extend_changed_at",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "confirmed_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("customer_number", name=op.f("pk_customers")),
        sa.UniqueConstraint("shop_ref", name=op.f("uq_customers_shop_ref")),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customers_extend_changed_at"), ["extend_changed_at"], unique=False
        )

    op.create_table(
        "dirty_balances",
        sa.Column("product_number", sa.String(length=64), nullable=False),
        sa.Column("warehouse", sa.String(length=64), nullable=False),
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
        sa.PrimaryKeyConstraint("product_number", "warehouse", name=op.f("pk_dirty_balances")),
    )
    op.create_table(
        "drift",
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("field", sa.String(length=200), nullable=False),
        sa.Column(
            "first_seen", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "last_seen", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("example", sa.Text(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("model", "field", name=op.f("pk_drift")),
    )
    op.create_table(
        "id_mappings",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("shop_ref", sa.String(length=128), nullable=False),
        sa.Column("extend_id", sa.String(length=128), nullable=False),
        sa.Column(
            "created_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("kind", "shop_ref", name=op.f("pk_id_mappings")),
        sa.UniqueConstraint("kind", "extend_id", name=op.f("uq_id_mappings_kind_extend_id")),
    )
    op.create_table(
        "inbox",
        sa.Column("delivery_id", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.String(length=128), nullable=True),
        sa.Column(
            "received_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("raw_body", sa.Text(), nullable=False),
        sa.Column("notification_count", sa.Integer(), nullable=False),
        sa.Column("unknown_action_count", sa.Integer(), nullable=False),
        sa.Column("last_seen_attempt", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_inbox")),
    )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbox_received_at"), ["received_at"], unique=False)

    op.create_table(
        "orders",
        sa.Column("shop_ref", sa.String(length=128), nullable=False),
        sa.Column("order_number", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("customer_number", sa.String(length=64), nullable=True),
        sa.Column(
            "shop_payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "extend_detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "expected_delivery_date",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "extend_changed_at",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("shop_ref", name=op.f("pk_orders")),
        sa.UniqueConstraint("order_number", name=op.f("uq_orders_order_number")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_orders_status"), ["status"], unique=False)

    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "created_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "delivered_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_key"), ["key"], unique=False)
        batch_op.create_index(
            "ix_outbox_pending", ["delivered_at", "next_attempt_at"], unique=False
        )

    op.create_table(
        "parked_failures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "created_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "resolved_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parked_failures")),
    )
    with op.batch_alter_table("parked_failures", schema=None) as batch_op:
        batch_op.create_index("ix_parked_failures_open", ["resolved_at", "kind"], unique=False)

    op.create_table(
        "prices",
        sa.Column("customer_number", sa.String(length=64), nullable=False),
        sa.Column("product_number", sa.String(length=64), nullable=False),
        sa.Column(
            "unit_price", extend_connector.store.types.Amount(precision=20, scale=6), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "list_price", extend_connector.store.types.Amount(precision=20, scale=6), nullable=True
        ),
        sa.Column(
            "discount_percent",
            extend_connector.store.types.Amount(precision=20, scale=6),
            nullable=True,
        ),
        sa.Column("price_list", sa.String(length=64), nullable=True),
        sa.Column(
            "vat_percent", extend_connector.store.types.Amount(precision=20, scale=6), nullable=True
        ),
        sa.Column(
            "valid_to", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "confirmed_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("customer_number", "product_number", name=op.f("pk_prices")),
    )
    op.create_table(
        "products",
        sa.Column("product_number", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=400), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=True),
        sa.Column("ean", sa.String(length=64), nullable=True),
        sa.Column(
            "vat_percent", extend_connector.store.types.Amount(precision=20, scale=6), nullable=True
        ),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("customs_commodity_code", sa.String(length=32), nullable=True),
        sa.Column("supply_mode", sa.String(length=32), nullable=True),
        sa.Column("phase_out", sa.Boolean(), nullable=False),
        sa.Column(
            "extend_changed_at",
            extend_connector.store.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "confirmed_at", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("product_number", name=op.f("pk_products")),
    )
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_products_extend_changed_at"), ["extend_changed_at"], unique=False
        )

    op.create_table(
        "shipments",
        sa.Column("shop_ref", sa.String(length=128), nullable=False),
        sa.Column("shipment_number", sa.String(length=64), nullable=False),
        sa.Column("carrier", sa.String(length=64), nullable=True),
        sa.Column("tracking_number", sa.String(length=128), nullable=True),
        sa.Column("tracking_url", sa.String(length=1000), nullable=True),
        sa.Column(
            "ship_date", extend_connector.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "lines",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["shop_ref"],
            ["orders.shop_ref"],
            name=op.f("fk_shipments_shop_ref_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("shop_ref", "shipment_number", name=op.f("pk_shipments")),
    )


def downgrade() -> None:
    op.drop_table("shipments")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_products_extend_changed_at"))

    op.drop_table("products")
    op.drop_table("prices")
    with op.batch_alter_table("parked_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_parked_failures_open")

    op.drop_table("parked_failures")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_pending")
        batch_op.drop_index(batch_op.f("ix_outbox_key"))

    op.drop_table("outbox")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_status"))

    op.drop_table("orders")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_received_at"))

    op.drop_table("inbox")
    op.drop_table("id_mappings")
    op.drop_table("drift")
    op.drop_table("dirty_balances")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customers_extend_changed_at"))

    op.drop_table("customers")
    op.drop_table("cursors")
    op.drop_table("balances")
