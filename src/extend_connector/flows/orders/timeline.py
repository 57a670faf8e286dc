"""One order's story across systems, from what the connector keeps durably (the console's order
page): received from the shop, each submit or change job and its steps (the Extend calls with
their outcome and time), Extend's webhooks about it (kept in the inbox), state changes Extend
reported, shipments, parked failures and their retries,
amendments, and every event told to the shop with its delivery.

Read-only; kept as long as its sources are (the order row for ever, jobs and delivered events
for their retention: docs/store.md, "Retention").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector.extend.webhooks import OrderNotification, WebhookError, parse_envelope
from extend_connector.flows import failures
from extend_connector.flows.context import current
from extend_connector.flows.orders.base import CANCEL_FAILURE_KIND, FAILURE_KIND
from extend_connector.store.models import (
    InboxRow,
    OrderRow,
    OutboxRow,
    ParkedFailureRow,
    ShipmentRow,
)

SEARCH_LIMIT = 50
# The steps that call Extend (their output is Extend's answer as the flow read it).
EXTEND_STEPS = frozenset({"orders.send", "orders.change_once", "orders.refresh_once"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One thing that happened to the order."""

    at: datetime | None
    source: str  # shop, connector, extend, job
    title: str
    detail: str = ""
    ok: bool = True
    data: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeline:
    shop_ref: str
    order_number: str | None
    status: str
    customer_number: str | None
    last_error: str | None
    payload: dict[str, Any]
    entries: list[Entry] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class Found:
    shop_ref: str
    order_number: str | None
    status: str
    customer_number: str | None
    created_at: datetime
    updated_at: datetime


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def search(text: str, *, limit: int = SEARCH_LIMIT) -> list[Found]:
    """Orders whose shop reference, Extend order number or customer number is `text` (exact,
    or starting with it), newest first; the newest orders when `text` is empty."""
    text = text.strip()
    query = sa.select(OrderRow).order_by(OrderRow.created_at.desc()).limit(limit)
    if text:
        like = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            sa.or_(
                OrderRow.shop_ref.like(like, escape="\\"),
                OrderRow.order_number.like(like, escape="\\"),
                OrderRow.customer_number.like(like, escape="\\"),
            )
        )
    with current().db.read() as session:
        return [
            Found(
                shop_ref=r.shop_ref,
                order_number=r.order_number,
                status=r.status,
                customer_number=r.customer_number,
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in session.scalars(query)
        ]


def _job_entries(shop_ref: str) -> list[Entry]:
    engine = current().engine
    mine = [
        job
        for prefix in (f"order-{shop_ref}", f"order-change-{shop_ref}-")
        for job in engine.list_workflows(id_prefix=prefix, limit=100, newest_first=False)
        if job.workflow_id == f"order-{shop_ref}"
        or job.workflow_id.startswith((f"order-{shop_ref}-retry-", f"order-change-{shop_ref}-"))
    ]
    entries = []
    for job in mine:
        entries.append(
            Entry(
                at=_aware(job.created_at),
                source="job",
                title=f"job {job.name} ({job.workflow_id}): {job.status}",
                detail=job.error or "",
                ok=job.status not in ("ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "CANCELLED"),
            )
        )
        for step in engine.list_steps(job.workflow_id):
            took = ""
            if step.started_at and step.completed_at:
                took = f" in {(step.completed_at - step.started_at).total_seconds() * 1000:.0f} ms"
            entries.append(
                Entry(
                    at=_aware(step.completed_at or step.started_at),
                    source="extend" if step.name in EXTEND_STEPS else "job",
                    title=f"step {step.name}{took}",
                    detail=step.error or _short(step.output),
                    ok=step.error is None,
                )
            )
    return entries


WEBHOOK_LIMIT = 200  # deliveries read per order (kept for store.inbox_retention_days)


def _webhook_entries(session: Session, order_number: str, shop_ref: str) -> list[Entry]:
    """Extend's webhooks about the order still kept in the inbox: each notification that names
    its order number (or the shop's reference), with the delivery's id and attempt."""
    needle = order_number.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = session.scalars(
        sa.select(InboxRow)
        .where(InboxRow.raw_body.like(f"%{needle}%", escape="\\"))
        .order_by(InboxRow.received_at)
        .limit(WEBHOOK_LIMIT)
    )
    entries = []
    for row in rows:
        try:
            envelope = parse_envelope(row.raw_body.encode())
        except WebhookError:
            continue
        for n in envelope.notifications:
            if isinstance(n, OrderNotification) and (
                n.order_number == order_number or n.order_number_external == shop_ref
            ):
                entries.append(
                    Entry(
                        at=_aware(row.received_at),
                        source="extend",
                        title=f"webhook {n.action}",
                        detail=f"delivery {row.delivery_id}, attempt {envelope.attempt}"
                        + (f", warehouse {n.warehouse}" if n.warehouse else ""),
                        data=dict(n.details),
                    )
                )
    return entries


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 300 else text[:300] + "…"


def timeline(shop_ref: str) -> Timeline | None:
    """The order's story, oldest first (None: no such order)."""
    ctx = current()
    with ctx.db.read() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return None
        entries = [
            Entry(
                at=_aware(row.created_at),
                source="shop",
                title="received from the shop",
                data=row.shop_payload,
            )
        ]
        for amendment in (row.shop_payload or {}).get("amendments") or []:
            entries.append(
                Entry(
                    at=_aware(datetime.fromisoformat(amendment["at"])),
                    source="connector",
                    title="amended by an operator before a retry",
                    detail=", ".join(
                        f"{k}: {v.get('from')!r} -> {v.get('to')!r}"
                        for k, v in (amendment.get("changes") or {}).items()
                    ),
                )
            )
        for shipment in session.scalars(
            sa.select(ShipmentRow).where(ShipmentRow.shop_ref == shop_ref)
        ):
            entries.append(
                Entry(
                    at=_aware(shipment.ship_date),
                    source="extend",
                    title=f"shipped: {shipment.shipment_number}",
                    detail=" ".join(x for x in (shipment.carrier, shipment.tracking_number) if x),
                )
            )
        for parked in session.scalars(
            sa.select(ParkedFailureRow)
            .where(
                ParkedFailureRow.kind.in_([FAILURE_KIND, CANCEL_FAILURE_KIND]),
                ParkedFailureRow.key == shop_ref,
            )
            .order_by(ParkedFailureRow.id)
        ):
            f = failures.view(parked)
            entries.append(
                Entry(
                    at=_aware(f.created_at),
                    source="connector",
                    title=f"parked ({f.kind}, failure {f.id}): {f.reason}",
                    detail=f.message,
                    ok=False,
                )
            )
            if f.resolved_at is not None:
                entries.append(
                    Entry(
                        at=_aware(f.resolved_at),
                        source="connector",
                        title=f"failure {f.id} {f.state}",
                        detail=str(f.detail.get("lastRetry") or ""),
                    )
                )
        for event in session.scalars(
            sa.select(OutboxRow).where(OutboxRow.key == f"order:{shop_ref}").order_by(OutboxRow.id)
        ):
            payload = event.payload if isinstance(event.payload, dict) else {}
            delivered = _aware(event.delivered_at)
            entries.append(
                Entry(
                    at=_aware(event.created_at),
                    source="shop",
                    title=f"told the shop: {event.event_type} ({payload.get('status', '')})",
                    detail=(
                        f"delivered {delivered.isoformat(timespec='seconds')}"
                        if delivered
                        else (
                            f"not delivered yet, {event.attempts} attempt(s)"
                            + (f": {event.last_error}" if event.last_error else "")
                            if event.next_attempt_at is not None
                            else "not for delivery"
                        )
                    ),
                    ok=delivered is not None or not event.last_error,
                )
            )
        if row.order_number:
            entries.extend(_webhook_entries(session, row.order_number, shop_ref))
        result = Timeline(
            shop_ref=row.shop_ref,
            order_number=row.order_number,
            status=row.status,
            customer_number=row.customer_number,
            last_error=row.last_error,
            payload=dict(row.shop_payload or {}),
            entries=entries,
        )
    result.entries.extend(_job_entries(shop_ref))
    result.entries.sort(key=lambda e: e.at or datetime.min.replace(tzinfo=UTC))
    return result
