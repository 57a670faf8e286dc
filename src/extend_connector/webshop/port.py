"""The webshop port: one method to hand an event to the shop, with errors classified by what to do.

WebshopError
 ├── ShopUnavailable   the shop did not take it now (network, timeout, 5xx, 429): retry later
 └── DeliveryRefused   the shop answered that it will never take it (4xx other than 408/429): park
 it
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from extend_connector.webshop.events import EventType, ShopEvent


class WebshopError(Exception):
    """Root of the webshop port's errors."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body_excerpt: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after


class ShopUnavailable(WebshopError):
    """Transient: deliver again later with backoff."""


class DeliveryRefused(WebshopError):
    """Permanent for this event: park it with the shop's answer so a person can act."""


class WebshopPort(Protocol):
    """What every webshop adapter offers to the flows' delivery job."""

    async def deliver(self, event: ShopEvent) -> None:
        """Hand `event` to the shop; return when the shop has accepted it, else raise
        WebshopError."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def latest_state_types(shop: object) -> frozenset[EventType]:
    """The event types `shop` applies as a whole state (absolute stock figures, whole order
    views, whole product and customer documents), declared by the adapter as
    `latest_state_types`: of several such events owed about one record in a row, only the
    newest needs applying, and the outbox gives the shop that one (`flows/outbox.py`). Empty
    (the default) for a shop that acts on every event, as a webhook receiver may."""
    return frozenset(getattr(shop, "latest_state_types", frozenset()))


@runtime_checkable
class BatchDelivery(Protocol):
    """An adapter that applies many events at once (fewer calls to the shop than one each)."""

    async def deliver_batch(self, events: Sequence[ShopEvent]) -> list[WebshopError | None]:
        """Hand `events` (at most one per key) to the shop; per event, the error or None."""
        ...


async def deliver_all(
    shop: WebshopPort, events: Sequence[ShopEvent], concurrency: int
) -> list[WebshopError | None]:
    """Deliver `events`: in one batch where the adapter takes batches, else one call each, at
    most `concurrency` at once."""
    if isinstance(shop, BatchDelivery):
        return await shop.deliver_batch(events)
    limit = asyncio.Semaphore(concurrency)

    async def one(event: ShopEvent) -> WebshopError | None:
        async with limit:
            try:
                await shop.deliver(event)
            except WebshopError as exc:
                return exc
            return None

    return list(await asyncio.gather(*(one(e) for e in events)))


@dataclass(frozen=True, kw_only=True, slots=True)
class ShopOrderChange:
    """An order as a shop platform reports it: placed and paid (`payload`: the body of
    `POST /v1/orders`), or cancelled in the shop."""

    shop_ref: str
    updated_at: datetime
    cancelled: bool
    payload: dict[str, Any]
    cancelled_lines: tuple[int, ...] = ()  # 1-based lines of `payload` cancelled in the shop


@runtime_checkable
class OrderSource(Protocol):
    """An adapter the connector reads orders from (a platform adapter; the headless shop posts
    them to `/v1/orders` instead)."""

    def orders_changed_since(self, since: datetime | None) -> AsyncIterator[ShopOrderChange]:
        """Paid and cancelled orders changed after `since`, oldest change first."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ShopCustomerChange:
    """A customer registered in a shop platform: `data` is the body of `POST /v1/customers`
    (snake_case), `shop_ref` its identity."""

    shop_ref: str
    updated_at: datetime
    data: dict[str, Any]


@runtime_checkable
class CustomerSource(Protocol):
    """An adapter the connector reads registered customers from (scope `to_extend`)."""

    def customers_changed_since(self, since: datetime | None) -> AsyncIterator[ShopCustomerChange]:
        """Registered customers changed after `since`, oldest change first."""
        ...
