"""Translation between our domain objects and Extend's wire shapes (both directions).

Outgoing bodies are plain dicts in Extend's camelCase; incoming wire models become domain
values with aware datetimes (naive times are read in the dialect's zone).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from extend_connector.domain import (
    Address,
    Balance,
    Customer,
    Order,
    OrderChange,
    OrderLine,
    OrderState,
    OrderStatus,
    Price,
    Product,
    Shipment,
    ShipmentLine,
)

from .wire import (
    WireAddress,
    WireAvailability,
    WireCustomer,
    WireOrder,
    WireOrderLight,
    WireOrderRow,
    WirePrice,
    WireProduct,
)

Aware = Callable[[datetime], datetime]

ROW_INACTIVE = "Inactive"  # Extend's documented row-cancel operation (S4)

_STATUS = {s.value.lower(): s for s in OrderStatus if s.in_extend}


class UnknownStatus(ValueError):
    """Extend sent an order status this client does not know."""


def order_status(text: str) -> OrderStatus:
    try:
        return _STATUS[text.strip().lower()]
    except KeyError:
        raise UnknownStatus(f"unknown order status {text!r}") from None


def number(value: Decimal | None) -> int | float | None:
    """A JSON number as in Extend's samples (`2`, `41.0`, `10.6778`)."""
    if value is None:
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def address_body(address: Address | None) -> dict[str, Any] | None:
    if address is None:
        return None
    return _drop_none(
        {
            "name": address.name,
            "careOf": address.care_of,
            "addressLine1": address.address_line1,
            "addressLine2": address.address_line2,
            "zipCode": address.zip_code,
            "city": address.city,
            "countryCode": address.country_code,
            "phone": address.phone,
            "email": address.email,
        }
    )


def row_body(line: OrderLine, *, default_warehouse: str, currency: str | None) -> dict[str, Any]:
    sales = _drop_none(
        {
            "quantity": number(line.quantity),
            "unit": line.unit,
            "unitPrice": number(line.unit_price),
            "vatPercent": number(line.vat_percent),
            "currency": currency if line.unit_price is not None else None,
        }
    )
    row: dict[str, Any] = {
        "product": {"productNumber": line.product_number},
        "salesData": sales,
        # Always sent: without it a row cancel adds a new cancelled row (S4), and Extend needs it.
        "warehouse": line.warehouse or default_warehouse,
    }
    if line.position is not None:
        row["position"] = line.position
    if line.cancelled:
        row["rowOperation"] = ROW_INACTIVE
    return row


def order_body(order: Order, *, customer_number: str, default_warehouse: str) -> dict[str, Any]:
    """POST CustomerOrders body: the documented minimum plus the house-contract header fields.

    Prices are sent exactly as the shop set them (Extend keeps them); a line without a price
    leaves `unitPrice` out so Extend prices it for the customer.
    """
    header = _drop_none(
        {
            "orderType": "Normal",
            "orderNumberExternal": order.shop_ref,
            "customerNumber": customer_number,
            "askedDeliveryDate": order.asked_delivery_date.isoformat()
            if order.asked_delivery_date
            else None,
            "currency": order.currency,
            "deliveryAddress": address_body(order.delivery_address),
            "invoiceAddress": address_body(order.invoice_address),
            "paymentType": order.payment_type,
            "orderEmail": order.email,
            "notes": order.notes,
        }
    )
    rows = [
        row_body(line, default_warehouse=default_warehouse, currency=order.currency)
        for line in order.lines
    ]
    return {"orderHeader": header, "orderRows": rows}


def customer_body(customer: Customer) -> dict[str, Any]:
    addresses = []
    for kind, address in (
        ("Delivery", customer.delivery_address),
        ("Invoice", customer.invoice_address),
    ):
        body = address_body(address)
        if body is not None:
            addresses.append({"type": kind, **body})
    return _drop_none(
        {
            "customerNumber": customer.customer_number or None,
            "name": customer.name,
            "lastName": customer.last_name,
            "organizationNumber": customer.organization_number,
            "customerGroup": customer.customer_group,
            "priceList": customer.price_list,
            "salesperson": customer.salesperson,
            "email": customer.email,
            "phone": customer.phone,
            "addresses": addresses or None,
        }
    )


# --- incoming --------------------------------------------------------------------------------


def _when(value: datetime | date | None, aware: Aware) -> datetime | date | None:
    if isinstance(value, datetime):
        return aware(value)
    return value


def _opt(value: datetime | None, aware: Aware) -> datetime | None:
    return None if value is None else aware(value)


def order_line(row: WireOrderRow) -> OrderLine:
    sales = row.sales_data
    return OrderLine(
        product_number=row.product.product_number,
        quantity=(sales.quantity if sales and sales.quantity is not None else Decimal(0)),
        unit=sales.unit if sales else None,
        unit_price=sales.unit_price if sales else None,
        vat_percent=sales.vat_percent if sales else None,
        warehouse=row.warehouse,
        position=row.position,
        cancelled=(row.row_operation or "").lower() == ROW_INACTIVE.lower(),
    )


def order_state(wire: WireOrder, aware: Aware, *, fallback_changed: datetime) -> OrderState:
    status_text = wire.status or wire.order_header.status
    if status_text is None:
        raise UnknownStatus("order has no status")
    shipments = tuple(
        Shipment(
            shipment_number=s.shipment_number,
            carrier=s.carrier,
            tracking_number=s.tracking_number,
            tracking_url=s.tracking_url,
            ship_date=_opt(s.ship_date, aware),
            lines=tuple(
                ShipmentLine(
                    position=r.position, product_number=r.product_number, quantity=r.quantity
                )
                for r in s.rows
            ),
        )
        for s in wire.shipments
    )
    return OrderState(
        order_number=wire.order_number,
        order_number_external=wire.order_header.order_number_external
        or wire.order_number_external
        or "",
        status=order_status(status_text),
        changed_at=aware(wire.changed_date) if wire.changed_date else fallback_changed,
        expected_delivery_date=_when(wire.expected_delivery_date, aware),
        lines=tuple(order_line(r) for r in wire.order_rows),
        shipments=shipments,
    )


def order_change(wire: WireOrderLight, aware: Aware) -> OrderChange:
    return OrderChange(
        order_number=wire.order_number,
        order_number_external=wire.order_number_external,
        status=order_status(wire.status),
        changed_at=aware(wire.changed_date),
    )


def balance(wire: WireAvailability, aware: Aware) -> Balance:
    return Balance(
        product_number=wire.product_number,
        warehouse=wire.warehouse,
        available=wire.available_balance,
        physical=wire.physical_balance,
        reserved=wire.reserved_quantity,
        changed_at=_opt(wire.changed_date, aware),
    )


def product(wire: WireProduct, aware: Aware, *, fallback_changed: datetime) -> Product:
    return Product(
        product_number=wire.product_number,
        name=wire.product_name or "",
        changed_at=aware(wire.changed_date) if wire.changed_date else fallback_changed,
        unit=wire.unit,
        ean=wire.ean,
        vat_percent=wire.vat_percent,
        notes=wire.product_notes,
        customs_commodity_code=wire.customs_commodity_code,
        supply_mode=wire.supply_mode,
        phase_out=bool(wire.phase_out),
        extra=dict(wire.model_extra or {}),
    )


def _address(wire: WireAddress) -> Address:
    return Address(
        name=wire.name or "",
        address_line1=wire.address_line1 or "",
        zip_code=wire.zip_code or "",
        city=wire.city or "",
        country_code=wire.country_code or "SE",
        care_of=wire.care_of,
        address_line2=wire.address_line2,
        phone=wire.phone,
        email=wire.email,
    )


def customer(wire: WireCustomer, aware: Aware) -> Customer:
    by_type = {(a.type or "").lower(): a for a in wire.addresses}
    delivery = by_type.get("delivery")
    invoice = by_type.get("invoice")
    return Customer(
        customer_number=wire.customer_number,
        name=wire.name or "",
        changed_at=_opt(wire.changed_date, aware),
        last_name=wire.last_name,
        organization_number=wire.organization_number,
        customer_group=wire.customer_group,
        price_list=wire.price_list,
        salesperson=wire.salesperson,
        email=wire.email,
        phone=wire.phone,
        delivery_address=_address(delivery) if delivery else None,
        invoice_address=_address(invoice) if invoice else None,
    )


def price(wire: WirePrice, aware: Aware, *, customer_number: str) -> Price:
    # `unitPrice` is already the net best price (campaign, discount or list); the campaign price
    # is shown only while it applies, and Extend decides that.
    return Price(
        customer_number=wire.customer_number or customer_number,
        product_number=wire.product_number,
        unit_price=wire.unit_price,
        currency=wire.currency or "SEK",
        list_price=wire.list_price,
        discount_percent=wire.discount_percent,
        price_list=wire.price_list,
        vat_percent=wire.vat_percent,
        valid_to=_opt(wire.valid_to, aware),
    )
