"""The shop's order as a typed value: parsed once from the stored JSON, the same order out."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from extend_connector.domain import Address
from extend_connector.flows.orders import ShopLine, ShopOrder, order_from_payload

PAYLOAD = {
    "shopRef": "S-7",
    "currency": "EUR",
    "placedAt": "2024-10-15T15:00:00+02:00",
    "customerNumber": "C-1",
    "shopCustomerRef": "shop-cust-9",
    "askedDeliveryDate": "2024-10-20T00:00:00",
    "deliveryAddress": {
        "name": "Ada",
        "addressLine1": "Gatan 1",
        "zipCode": "111 22",
        "city": "Stockholm",
    },
    "paymentType": "card",
    "email": "ada@example.com",
    "notes": "ring twice",
    "lines": [
        {"productNumber": "A", "quantity": "2", "unitPrice": "10.678", "vatPercent": 25},
        {"productNumber": "B", "quantity": 1.5, "warehouse": "GreenWarehouse", "unit": "kg"},
        {"productNumber": "A", "quantity": "3"},
    ],
}


def test_every_field_is_read_once_into_typed_values() -> None:
    order = ShopOrder.from_json(PAYLOAD)
    assert order.shop_ref == "S-7"
    assert order.currency == "EUR"
    assert order.placed_at == datetime(2024, 10, 15, 13, 0, tzinfo=UTC)
    # A naive date from an old row is read as UTC, as before.
    assert order.asked_delivery_date == datetime(2024, 10, 20, tzinfo=UTC)
    assert order.customer_number == "C-1"
    assert order.shop_customer_ref == "shop-cust-9"
    assert order.delivery_address == Address(
        name="Ada", address_line1="Gatan 1", zip_code="111 22", city="Stockholm", country_code="SE"
    )
    assert order.invoice_address is None
    assert (order.payment_type, order.email, order.notes) == (
        "card",
        "ada@example.com",
        "ring twice",
    )
    assert order.lines == (
        ShopLine(
            number=1,
            product_number="A",
            quantity=Decimal("2"),
            unit_price=Decimal("10.678"),
            vat_percent=Decimal("25"),
        ),
        ShopLine(
            number=2,
            product_number="B",
            quantity=Decimal("1.5"),
            unit="kg",
            warehouse="GreenWarehouse",
        ),
        ShopLine(number=3, product_number="A", quantity=Decimal("3")),
    )
    assert order.product_numbers() == {"A", "B"}
    assert order.line(2).product_number == "B"


def test_defaults_for_what_the_shop_left_out() -> None:
    order = ShopOrder.from_json({"shopRef": "S-8", "currency": None})
    assert order.lines == ()
    assert order.currency == "SEK"
    assert order.placed_at is None
    assert order.active_line_numbers(None) == []


def test_the_value_is_frozen() -> None:
    order = ShopOrder.from_json(PAYLOAD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        order.shop_ref = "other"  # type: ignore[misc]


def test_cancelled_lines_are_left_out_of_what_is_sent() -> None:
    order = ShopOrder.from_json(PAYLOAD)
    assert order.active_line_numbers({"lines": [1]}) == [2, 3]
    fallback = datetime(2024, 1, 1, tzinfo=UTC)
    sent = order.to_order(customer_number="WEB", line_numbers=[2, 3], placed_fallback=fallback)
    assert [(line.product_number, line.quantity) for line in sent.lines] == [
        ("B", Decimal("1.5")),
        ("A", Decimal("3")),
    ]
    assert sent.lines[0].warehouse == "GreenWarehouse"
    assert sent.customer_number == "WEB"
    assert sent.placed_at == order.placed_at
    assert sent == order_from_payload(
        PAYLOAD, customer_number="WEB", line_numbers=[2, 3], placed_fallback=fallback
    )


def test_the_placing_time_falls_back_to_when_the_order_was_received() -> None:
    fallback = datetime(2024, 1, 1, tzinfo=UTC)
    payload = {k: v for k, v in PAYLOAD.items() if k != "placedAt"}
    sent = ShopOrder.from_json(payload).to_order(
        customer_number="WEB", line_numbers=[1], placed_fallback=fallback
    )
    assert sent.placed_at == fallback
