"""The shop's order, parsed once into a typed value (`ShopOrder`) from the JSON stored in
orders.shop_payload; intake, submit, changes and replay pass it around instead of the dict.

The stored JSON stays the record (it is what a repeat post is compared with, and workflow
arguments and step results stay JSON): code converts at the boundary with `ShopOrder.from_json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True, kw_only=True, slots=True)
class ShopLine:
    """One line as the shop posted it (`number` is 1-based, the shop's line number)."""

    number: int
    product_number: str
    quantity: Decimal
    unit: str | None = None
    unit_price: Decimal | None = None
    vat_percent: Decimal | None = None
    warehouse: str | None = None

    @classmethod
    def from_json(cls, number: int, data: Mapping[str, Any]) -> ShopLine:
        return cls(
            number=number,
            product_number=data["productNumber"],
            quantity=Decimal(str(data["quantity"])),
            unit=data.get("unit"),
            unit_price=_dec(data.get("unitPrice")),
            vat_percent=_dec(data.get("vatPercent")),
            warehouse=data.get("warehouse"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ShopOrder:
    """A shop order as posted (the API validated it; stored rows are read back the same way)."""

    shop_ref: str
    lines: tuple[ShopLine, ...]
    placed_at: datetime | None = None
    customer_number: str | None = None
    shop_customer_ref: str | None = None
    currency: str = "SEK"
    asked_delivery_date: datetime | None = None
    delivery_address: Address | None = None
    invoice_address: Address | None = None
    payment_type: str | None = None
    email: str | None = None
    notes: str | None = None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> ShopOrder:
        lines = payload.get("lines") or []
        return cls(
            shop_ref=payload["shopRef"],
            lines=tuple(ShopLine.from_json(i + 1, line) for i, line in enumerate(lines)),
            placed_at=_when(payload.get("placedAt")),
            customer_number=payload.get("customerNumber"),
            shop_customer_ref=payload.get("shopCustomerRef"),
            currency=payload.get("currency") or "SEK",
            asked_delivery_date=_when(payload.get("askedDeliveryDate")),
            delivery_address=_address(payload.get("deliveryAddress")),
            invoice_address=_address(payload.get("invoiceAddress")),
            payment_type=payload.get("paymentType"),
            email=payload.get("email"),
            notes=payload.get("notes"),
        )

    def line(self, number: int) -> ShopLine:
        """The line with this 1-based number."""
        return self.lines[number - 1]

    def product_numbers(self) -> set[str]:
        return {line.product_number for line in self.lines}

    def active_line_numbers(self, change: Mapping[str, Any] | None) -> list[int]:
        """1-based shop line numbers still wanted (the shop may cancel lines before sending)."""
        cancelled = set((change or {}).get("lines") or [])
        return [line.number for line in self.lines if line.number not in cancelled]

    def to_order(
        self, *, customer_number: str, line_numbers: list[int], placed_fallback: datetime
    ) -> Order:
        """The domain order to send to Extend: the wanted lines, for this customer."""
        lines = tuple(
            OrderLine(
                product_number=line.product_number,
                quantity=line.quantity,
                unit=line.unit,
                unit_price=line.unit_price,
                vat_percent=line.vat_percent,
                warehouse=line.warehouse,
            )
            for line in map(self.line, line_numbers)
        )
        return Order(
            shop_ref=self.shop_ref,
            lines=lines,
            placed_at=self.placed_at or placed_fallback,
            customer_number=customer_number,
            shop_customer_ref=self.shop_customer_ref,
            currency=self.currency,
            asked_delivery_date=self.asked_delivery_date,
            delivery_address=self.delivery_address,
            invoice_address=self.invoice_address,
            payment_type=self.payment_type,
            email=self.email,
            notes=self.notes,
        )


def active_line_numbers(payload: dict[str, Any], change: dict[str, Any] | None) -> list[int]:
    """1-based shop line numbers still wanted (the stored JSON read as a `ShopOrder`)."""
    return ShopOrder.from_json(payload).active_line_numbers(change)


def order_from_payload(
    payload: dict[str, Any],
    *,
    customer_number: str,
    line_numbers: list[int],
    placed_fallback: datetime,
) -> Order:
    """The stored JSON read as a `ShopOrder`, then `ShopOrder.to_order`."""
    return ShopOrder.from_json(payload).to_order(
        customer_number=customer_number, line_numbers=line_numbers, placed_fallback=placed_fallback
    )
