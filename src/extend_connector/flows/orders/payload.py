"""The shop's order payload (JSON, as stored in orders.shop_payload) read into domain values."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from extend_connector.domain import Address, Order, OrderLine


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _address(data: dict[str, Any] | None) -> Address | None:
    if not data:
        return None
    return Address(
        name=data.get("name", ""),
        address_line1=data.get("addressLine1", ""),
        zip_code=data.get("zipCode", ""),
        city=data.get("city", ""),
        country_code=data.get("countryCode") or "SE",
        care_of=data.get("careOf"),
        address_line2=data.get("addressLine2"),
        phone=data.get("phone"),
        email=data.get("email"),
    )


def active_line_numbers(payload: dict[str, Any], change: dict[str, Any] | None) -> list[int]:
    """1-based shop line numbers still wanted (the shop may cancel lines before sending)."""
    cancelled = set((change or {}).get("lines") or [])
    return [i + 1 for i in range(len(payload.get("lines") or [])) if i + 1 not in cancelled]


def order_from_payload(
    payload: dict[str, Any],
    *,
    customer_number: str,
    line_numbers: list[int],
    placed_fallback: datetime,
) -> Order:
    lines = []
    for number in line_numbers:
        line = payload["lines"][number - 1]
        lines.append(
            OrderLine(
                product_number=line["productNumber"],
                quantity=Decimal(str(line["quantity"])),
                unit=line.get("unit"),
                unit_price=_dec(line.get("unitPrice")),
                vat_percent=_dec(line.get("vatPercent")),
                warehouse=line.get("warehouse"),
            )
        )
    return Order(
        shop_ref=payload["shopRef"],
        lines=tuple(lines),
        placed_at=_when(payload.get("placedAt")) or placed_fallback,
        customer_number=customer_number,
        shop_customer_ref=payload.get("shopCustomerRef"),
        currency=payload.get("currency") or "SEK",
        asked_delivery_date=_when(payload.get("askedDeliveryDate")),
        delivery_address=_address(payload.get("deliveryAddress")),
        invoice_address=_address(payload.get("invoiceAddress")),
        payment_type=payload.get("paymentType"),
        email=payload.get("email"),
        notes=payload.get("notes"),
    )
