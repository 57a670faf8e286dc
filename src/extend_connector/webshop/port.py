"""The webshop port: one method to hand an event to the shop, with errors classified by what to do.

WebshopError
 ├── ShopUnavailable   the shop did not take it now (network, timeout, 5xx, 429): retry later
 └── DeliveryRefused   the shop answered that it will never take it (4xx other than 408/429): park
 it
"""

from __future__ import annotations

from typing import Protocol

from extend_connector.webshop.events import ShopEvent


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
