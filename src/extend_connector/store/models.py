"""The tables: the local copy the shop reads, and the integration state that makes it safe.

Local copy: products, balances (per warehouse), customers, prices (per customer), orders,
shipments. Integration state: inbox (webhook deliveries), outbox (events to the shop),
cursors, id_mappings, parked_failures, dirty_balances, drift, extend_rate_buckets, alerts.

Conventions: every instant is `UTCDateTime` (aware), every amount is `Amount` (Decimal),
every document is `JSONDoc`. `*_changed_at` is Extend's change date of the record;
`confirmed_at` is when we last fetched and confirmed it from Extend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from extend_connector.store.types import Amount, JSONDoc, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        Decimal: Amount(),
        dict[str, Any]: JSONDoc,
        list[Any]: JSONDoc,
    }


# --- local copy -------------------------------------------------------------------------


class ProductRow(Base):
    __tablename__ = "products"

    product_number: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(400))
    unit: Mapped[str | None] = mapped_column(sa.String(32))
    ean: Mapped[str | None] = mapped_column(sa.String(64))
    vat_percent: Mapped[Decimal | None]
    notes: Mapped[str | None] = mapped_column(sa.Text)
    customs_commodity_code: Mapped[str | None] = mapped_column(sa.String(32))
    supply_mode: Mapped[str | None] = mapped_column(sa.String(32))
    phase_out: Mapped[bool] = mapped_column(default=False)
    extend_changed_at: Mapped[datetime | None] = mapped_column(index=True)
    confirmed_at: Mapped[datetime | None]
    document: Mapped[dict[str, Any]] = mapped_column(default=dict)
    content_hash: Mapped[str | None] = mapped_column(sa.String(64))


class BalanceRow(Base):
    __tablename__ = "balances"

    product_number: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    warehouse: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    available: Mapped[Decimal]
    physical: Mapped[Decimal | None]
    reserved: Mapped[Decimal | None]
    extend_changed_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]
    # The value a webhook announced before a fetch confirmed it (shown as unconfirmed).
    notified_available: Mapped[Decimal | None]
    notified_at: Mapped[datetime | None]


class CustomerRow(Base):
    __tablename__ = "customers"

    customer_number: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    shop_ref: Mapped[str | None] = mapped_column(sa.String(128), unique=True)
    name: Mapped[str] = mapped_column(sa.String(400))
    last_name: Mapped[str | None] = mapped_column(sa.String(200))
    organization_number: Mapped[str | None] = mapped_column(sa.String(64))
    customer_group: Mapped[str | None] = mapped_column(sa.String(64))
    price_list: Mapped[str | None] = mapped_column(sa.String(64))
    salesperson: Mapped[str | None] = mapped_column(sa.String(64))
    email: Mapped[str | None] = mapped_column(sa.String(320))
    phone: Mapped[str | None] = mapped_column(sa.String(64))
    delivery_address: Mapped[dict[str, Any] | None]
    invoice_address: Mapped[dict[str, Any] | None]
    document: Mapped[dict[str, Any]] = mapped_column(default=dict)
    extend_changed_at: Mapped[datetime | None] = mapped_column(index=True)
    confirmed_at: Mapped[datetime | None]


class PriceRow(Base):
    __tablename__ = "prices"

    customer_number: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    product_number: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    unit_price: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(sa.String(3))
    list_price: Mapped[Decimal | None]
    discount_percent: Mapped[Decimal | None]
    price_list: Mapped[str | None] = mapped_column(sa.String(64))
    vat_percent: Mapped[Decimal | None]
    valid_to: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]


class OrderRow(Base):
    __tablename__ = "orders"

    shop_ref: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    order_number: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    status: Mapped[str] = mapped_column(sa.String(32), index=True)
    customer_number: Mapped[str | None] = mapped_column(sa.String(64))
    shop_payload: Mapped[dict[str, Any]]
    extend_detail: Mapped[dict[str, Any] | None]
    expected_delivery_date: Mapped[datetime | None]
    extend_changed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # POST attempts begun (written before each POST): a restarted submit that finds its own
    # attempt already begun looks the order up in Extend instead of posting again.
    submit_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    # A cancellation the shop asked for and Extend has not confirmed yet (flows/orders/changes.py).
    shop_change: Mapped[dict[str, Any] | None]
    # Times the watchdog resumed a stopped submit job of this order (flows/watchdog.py); past
    # its limit the order is parked instead.
    watchdog_recoveries: Mapped[int] = mapped_column(default=0, server_default="0")


class ShipmentRow(Base):
    __tablename__ = "shipments"

    shop_ref: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("orders.shop_ref", ondelete="CASCADE"), primary_key=True
    )
    shipment_number: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    carrier: Mapped[str | None] = mapped_column(sa.String(64))
    tracking_number: Mapped[str | None] = mapped_column(sa.String(128))
    tracking_url: Mapped[str | None] = mapped_column(sa.String(1000))
    ship_date: Mapped[datetime | None]
    lines: Mapped[list[Any]] = mapped_column(default=list)


# --- integration state ------------------------------------------------------------------


class InboxRow(Base):
    """One webhook delivery as received (its `delivery_id` is Extend's `Id`)."""

    __tablename__ = "inbox"

    delivery_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    attempt: Mapped[int] = mapped_column(default=1)
    notification_id: Mapped[str | None] = mapped_column(sa.String(128))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    raw_body: Mapped[str] = mapped_column(sa.Text)
    notification_count: Mapped[int] = mapped_column(default=0)
    unknown_action_count: Mapped[int] = mapped_column(default=0)
    last_seen_attempt: Mapped[int] = mapped_column(default=1)


class OutboxRow(Base):
    """An event owed to the shop; delivered in id order per key, retried with backoff."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_pending", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    # What the shop dedupes on (`webhook-id`): random, so it never repeats across databases the
    # way the row id does (null only for rows written before migration 0007: `evt_<id>`).
    event_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True, index=True)
    event_type: Mapped[str] = mapped_column(sa.String(64))
    key: Mapped[str] = mapped_column(sa.String(200), index=True)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)


class CursorRow(Base):
    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    high_water_mark: Mapped[datetime | None]
    # Instant the running sweep started at: the cursor never advances past it.
    signpost: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)


class IdMappingRow(Base):
    __tablename__ = "id_mappings"
    __table_args__ = (sa.UniqueConstraint("kind", "extend_id"),)

    kind: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    shop_ref: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    extend_id: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ParkedFailureRow(Base):
    """Work that a person must look at (validation errors, business conflicts)."""

    __tablename__ = "parked_failures"
    __table_args__ = (sa.Index("ix_parked_failures_open", "resolved_at", "kind"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(sa.String(32))
    key: Mapped[str] = mapped_column(sa.String(200))
    reason: Mapped[str] = mapped_column(sa.String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    retry_count: Mapped[int] = mapped_column(default=0)


class DirtyBalanceRow(Base):
    """A (product, warehouse) whose balance a webhook said changed and no fetch confirmed yet."""

    __tablename__ = "dirty_balances"

    product_number: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    warehouse: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    first_marked_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_marked_at: Mapped[datetime] = mapped_column(default=utcnow)


class DirtyPriceProductRow(Base):
    """A product whose prices may have changed for every kept customer (ProductCreated /
    ProductChanged) and that no price refresh has covered yet; refreshed in coalesced batches."""

    __tablename__ = "dirty_price_products"

    product_number: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    marked_at: Mapped[datetime] = mapped_column(default=utcnow)


class DirtyRecordRow(Base):
    """A record (order, product, customer) an Extend webhook said changed and that no refresh has
    fetched since: refreshed by its kind's drainer in batches (flows/records.py). `generation`
    grows with every mark, so a refresh clears only the mark it saw."""

    __tablename__ = "dirty_records"

    kind: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    generation: Mapped[int] = mapped_column(default=1)
    first_marked_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_marked_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_failed_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(sa.Text, default=None)

    __table_args__ = (sa.Index("ix_dirty_records_due", "kind", "next_attempt_at"),)


class DriftRow(Base):
    """A field Extend sent that our wire models do not know (kept and reported)."""

    __tablename__ = "drift"

    model: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    field: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    example: Mapped[str | None] = mapped_column(sa.Text)
    count: Mapped[int] = mapped_column(default=1)


class RateBucketRow(Base):
    """The fleet-wide token bucket of one Extend credential and rate-limit group, kept as GCRA's
    theoretical arrival time (store/ratebuckets.py): every process of the fleet reserves its
    calls here, so together they stay under Extend's limit."""

    __tablename__ = "extend_rate_buckets"

    credential: Mapped[str] = mapped_column(sa.String(400), primary_key=True)
    rate_group: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # Epoch seconds (the database's clock on PostgreSQL); the bucket is full when tat <= now.
    tat: Mapped[float] = mapped_column(sa.Double, default=0.0)


class ReachabilityRow(Base):
    """What one connector process has seen of Extend lately (flows/freshness.py): every process
    that calls Extend writes its row (at most once a second, on change or heartbeat), so a process
    that makes no calls itself (the `web` role) can still tell the shop whether Extend answers."""

    __tablename__ = "extend_reachability"

    process: Mapped[str] = mapped_column(sa.String(200), primary_key=True)  # host:pid
    role: Mapped[str] = mapped_column(sa.String(16))
    last_success_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_failure_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    # The start of the oldest call on the wire (None: none): a call hanging for long is visible.
    pending_since: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(index=True)
    # The same per rate-limit group: {group: {last_success_at, last_failure_at, last_error,
    # pending_since}} (ISO timestamps); None in a row of a process older than migration 0011.
    groups: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)


class ExecutorRow(Base):
    """A process that runs jobs (engine role `all` or `worker`) and when it last said it is alive
    (flows/executors.py): the fleet hands the running jobs of an executor id not seen for
    `engine.executor_dead_seconds` back to their queues."""

    __tablename__ = "engine_executors"

    executor_id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    application_version: Mapped[str] = mapped_column(sa.String(100))
    role: Mapped[str] = mapped_column(sa.String(16))
    process: Mapped[str] = mapped_column(sa.String(200))  # host:pid
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime] = mapped_column(index=True)


class AlertRow(Base):
    """One alert condition while it is open, and after (flows/alerts.py): at most one open row
    per `condition` (a partial unique index), so a condition that stays true alerts once; the
    row's `*_sent_at` say which notices (opened, resolved) went out."""

    __tablename__ = "alerts"
    __table_args__ = (
        sa.Index(
            "uq_alerts_open_condition",
            "condition",
            unique=True,
            sqlite_where=sa.text("resolved_at IS NULL"),
            postgresql_where=sa.text("resolved_at IS NULL"),
        ),
        sa.Index("ix_alerts_opened_at", "opened_at"),
    )

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    condition: Mapped[str] = mapped_column(sa.String(200))  # e.g. `failure:17`, `stale:balances`
    kind: Mapped[str] = mapped_column(sa.String(32))
    summary: Mapped[str] = mapped_column(sa.String(1000))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    opened_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    open_sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    resolved_sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(default=0)  # failed sends so far
    last_error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)


class SyncRunRow(Base):
    """A sync a person started (the console's Sync page, flows/runs.py): queued, running, done
    or failed, with its progress while it runs and its result after."""

    __tablename__ = "sync_runs"
    __table_args__ = (sa.Index("ix_sync_runs_requested_at", "requested_at"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    data_point: Mapped[str] = mapped_column(sa.String(32))
    full: Mapped[bool] = mapped_column(default=False)
    dry_run: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(16))  # queued, running, done, failed
    requested_by: Mapped[str] = mapped_column(sa.String(64))
    requested_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


metadata = Base.metadata
