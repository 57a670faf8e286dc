"""The order as the shop sees it, and telling the shop when something it shows changed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector.domain import OrderState, Shipment
from extend_connector.flows import outbox
from extend_connector.flows.context import current
from extend_connector.flows.orders.base import UnknownOrder
from extend_connector.store.models import OrderRow, ShipmentRow
from extend_connector.webshop import EventType


def iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def state_json(state: OrderState) -> dict[str, Any]:
    """What Extend said about the order, kept in orders.extend_detail and shown to the shop."""
    return {
        "orderNumber": state.order_number,
        "orderNumberExternal": state.order_number_external,
        "status": state.status.value,
        "changedAt": state.changed_at.isoformat(),
        "expectedDeliveryDate": iso(state.expected_delivery_date),
        "lines": [
            {
                "position": line.position,
                "productNumber": line.product_number,
                "quantity": str(line.quantity),
                "unitPrice": None if line.unit_price is None else str(line.unit_price),
                "warehouse": line.warehouse,
                "cancelled": line.cancelled,
            }
            for line in state.lines
        ],
    }


def expected_at(value: datetime | date | None) -> datetime | None:
    """Extend's expected delivery date as the instant it names, in UTC: the same form the column
    gives back, so a refetch of an unchanged order compares equal (no event for nothing)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def shipment_json(s: Shipment | ShipmentRow) -> dict[str, Any]:
    if isinstance(s, ShipmentRow):
        return {
            "shipmentNumber": s.shipment_number,
            "carrier": s.carrier,
            "trackingNumber": s.tracking_number,
            "trackingUrl": s.tracking_url,
            "shipDate": iso(s.ship_date),
            "lines": list(s.lines or []),
        }
    return {
        "shipmentNumber": s.shipment_number,
        "carrier": s.carrier,
        "trackingNumber": s.tracking_number,
        "trackingUrl": s.tracking_url,
        "shipDate": iso(s.ship_date),
        "lines": [
            {"position": x.position, "productNumber": x.product_number, "quantity": str(x.quantity)}
            for x in s.lines
        ],
    }


def order_view(session: Session, row: OrderRow) -> dict[str, Any]:
    """The order as the shop sees it (GET /v1/orders/{ref} and the order.updated event)."""
    shipments = session.scalars(
        sa.select(ShipmentRow)
        .where(ShipmentRow.shop_ref == row.shop_ref)
        .order_by(ShipmentRow.shipment_number)
    ).all()
    detail = row.extend_detail or {}
    return {
        "shopRef": row.shop_ref,
        "orderNumber": row.order_number,
        "status": row.status,
        "customerNumber": row.customer_number,
        "expectedDeliveryDate": iso(row.expected_delivery_date),
        "shipments": [shipment_json(s) for s in shipments],
        "lines": detail.get("lines") or [],
        "pendingChange": row.shop_change,
        "lastError": row.last_error,
        "extendChangedAt": iso(row.extend_changed_at),
    }


def projection(view: dict[str, Any]) -> dict[str, Any]:
    """The parts a shop shows; an event is owed only when one of them changes."""
    return {
        k: view[k]
        for k in (
            "orderNumber",
            "status",
            "expectedDeliveryDate",
            "shipments",
            "lines",
            "pendingChange",
            "lastError",
        )
    }


def tell_shop(session: Session, row: OrderRow, before: dict[str, Any] | None) -> bool:
    view = order_view(session, row)
    if before is not None and projection(view) == before:
        return False
    outbox.publish(session, EventType.ORDER_UPDATED, f"order:{row.shop_ref}", view)
    return True


def get_order_view(shop_ref: str) -> dict[str, Any]:
    with current().db.read() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            raise UnknownOrder(f"no order with shop reference {shop_ref!r}")
        return order_view(session, row)
