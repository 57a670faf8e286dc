"""An in-memory webshop for unit tests: records what it was told, can be told to fail."""

from __future__ import annotations

from collections.abc import Callable

from extend_connector.webshop.events import EventType, ShopEvent
from extend_connector.webshop.port import WebshopError


class RecordingWebshop:
    """Keeps every delivered event; `fail_with` (if set) decides per event whether to raise."""

    def __init__(
        self,
        fail_with: Callable[[ShopEvent], WebshopError | None] | None = None,
        *,
        latest_state_types: frozenset[EventType] = frozenset(),
    ) -> None:
        self.events: list[ShopEvent] = []
        self.fail_with = fail_with
        # As a platform adapter declares it (`webshop.port.latest_state_types`).
        self.latest_state_types = latest_state_types

    async def deliver(self, event: ShopEvent) -> None:
        if self.fail_with is not None:
            error = self.fail_with(event)
            if error is not None:
                raise error
        self.events.append(event)

    async def aclose(self) -> None:
        return None

    def of_type(self, type_: str) -> list[ShopEvent]:
        return [e for e in self.events if e.type.value == type_]
