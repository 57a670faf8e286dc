"""The webshop port and its adapters: how the connector tells the shop what changed.

Flows never talk to a shop directly: they record a `ShopEvent` (durably, in the outbox, in the
same transaction as the local-copy change) and a delivery job hands it to the configured
adapter. The built-in adapter is `HeadlessWebshop` (signed Standard Webhooks to one URL).
"""

from extend_connector.webshop.events import EventType, ShopEvent
from extend_connector.webshop.headless import HeadlessWebshop
from extend_connector.webshop.port import (
    DeliveryRefused,
    ShopUnavailable,
    WebshopError,
    WebshopPort,
)
from extend_connector.webshop.testing import RecordingWebshop

__all__ = [
    "DeliveryRefused",
    "EventType",
    "HeadlessWebshop",
    "RecordingWebshop",
    "ShopEvent",
    "ShopUnavailable",
    "WebshopError",
    "WebshopPort",
]
