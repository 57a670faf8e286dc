"""What the connector tells a shop: one event per real change of a value the shop shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    STOCK_CHANGED = "stock.changed"
    ORDER_UPDATED = "order.updated"
    PRODUCT_CHANGED = "product.changed"
    PRICE_CHANGED = "price.changed"
    CUSTOMER_CHANGED = "customer.changed"
    PING = "ping"  # `check --online` only: never written to the outbox


@dataclass(frozen=True, kw_only=True, slots=True)
class ShopEvent:
    """A change to tell the shop about.

    `event_id` is stable across delivery attempts (the shop dedupes on it); `key` names the
    record (`sku:<productNumber>`, `order:<shopRef>`, ...); `data` is plain JSON.
    """

    event_id: str
    type: EventType
    key: str
    data: dict[str, Any]
    occurred_at: datetime
    attempt: int = 1
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("ShopEvent.occurred_at must carry a UTC offset")

    def envelope(self) -> dict[str, Any]:
        """The JSON body sent to the shop (Standard Webhooks payload convention)."""
        return {
            "type": self.type.value,
            "timestamp": self.occurred_at.isoformat(),
            "data": {"key": self.key, **self.data},
        }
