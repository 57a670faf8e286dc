"""Value objects refuse naive datetimes and keep the order status ranking honest."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from extend_connector.domain import Balance, NaiveDatetimeError, Order, OrderLine, OrderStatus


def test_naive_datetime_refused_with_field_name() -> None:
    with pytest.raises(NaiveDatetimeError, match=r"Balance\.changed_at"):
        Balance(
            product_number="1", warehouse="W", available=Decimal(1), changed_at=datetime(2026, 1, 1)
        )


def test_order_needs_lines_and_is_frozen() -> None:
    with pytest.raises(ValueError, match="at least one line"):
        Order(shop_ref="A", lines=(), placed_at=datetime.now(UTC))
    order = Order(
        shop_ref="A",
        lines=(OrderLine(product_number="1", quantity=Decimal(2)),),
        placed_at=datetime.now(UTC),
    )
    with pytest.raises(AttributeError):
        order.shop_ref = "B"  # type: ignore[misc]


def test_status_never_ranks_backwards_and_locks_after_reserved() -> None:
    assert OrderStatus.PICKED.rank > OrderStatus.RESERVED.rank > OrderStatus.REGISTERED.rank
    assert OrderStatus.CANCELLED.rank > OrderStatus.PICKED.rank
    assert OrderStatus.REGISTERED.editable and not OrderStatus.RESERVED.editable
    assert not OrderStatus.PARKED.in_extend and OrderStatus.REGISTERED.in_extend
